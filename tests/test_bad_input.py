"""The bad-input table (README, Errors): each row ends in one line ``error: ...; fix: ...`` with exit status 2, no
traceback, and the run directory's earlier report untouched. The rows run the script in this process
(``run_in_process``); the unwritable run directory runs it as a subprocess, as a user would."""

import errno
import os

import pytest
import torch

from robustlab.cli import one_line_errors
from robustlab.evaluate import evaluate
from tests.helpers import make_cfg, run_cli, run_in_process
from tests.regression.cases import checkpoint
from tests.test_cli import _assert_one_line_error

KEPT = '{"kept": true}\n'


def _bad_checkpoint(tmp_path, kind):
    good = checkpoint("standard")
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    else:
        ckpt = torch.load(good, weights_only=True)
        name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
        ckpt["state_dict"][name] = ckpt["state_dict"][name].clone().fill_(float("nan" if kind == "nan" else "inf"))
        torch.save(ckpt, path)
    return path


ROWS = {  # row: (overrides, fragments of the message)
    "test_size=0": (["data.test_size=0"], ["data.test_size must be a positive number", "got 0"]),
    "eps negative": (["attack.pgd_linf.eps=-1"], ["eps must be a finite number >= 0", "-1"]),
    "eps NaN": (["attack.pgd_linf.eps=nan"], ["eps must be a finite number >= 0", "nan"]),
    "eps a string": (["attack.pgd_linf.eps=abc"], ["eps must be a finite number >= 0", "'abc'"]),
    "unknown attack parameter": (["attack.pgd_linf.stepz=3"], ["unknown config key 'attack.pgd_linf.stepz'"]),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_values(row, tmp_path):
    overrides, fragments = ROWS[row]
    (tmp_path / "report.json").write_text(KEPT)
    args = [f"ckpt={checkpoint('standard')}", "attack=[pgd_linf]", "data.test_size=5", "logger=none"]
    _assert_one_line_error(run_in_process("evaluate.py", *args, *overrides, f"hydra.run.dir={tmp_path}"), *fragments)
    assert (tmp_path / "report.json").read_text() == KEPT


@pytest.mark.parametrize(
    "kind, fragments",
    [("truncated", ["is not a readable PyTorch checkpoint"]), ("nan", ["NaN or infinite weights"]), ("inf", ["NaN"])],
)
def test_bad_checkpoints(kind, fragments, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(KEPT)
    ckpt = _bad_checkpoint(tmp_path, kind)
    _assert_one_line_error(
        run_in_process("evaluate.py", f"ckpt={ckpt}", "logger=none", f"hydra.run.dir={run}"), *fragments
    )
    assert (run / "report.json").read_text() == KEPT


def test_an_unwritable_run_directory(tmp_path):
    target = "/proc/robustlab-test/run" if os.path.isdir("/proc") else "/nonexistent-root/run"
    result = run_cli("evaluate.py", f"ckpt={checkpoint('standard')}", "logger=none", f"hydra.run.dir={target}")
    _assert_one_line_error(result, "cannot write the run directory", "hydra.run.dir")


def test_a_full_disk_while_writing_the_report(tmp_path, monkeypatch, capsys):
    """The report's rename fails with ENOSPC: one line, exit 2, and the previous report.json is still there
    (no truncated file, no temporary left)."""
    (tmp_path / "report.json").write_text(KEPT)

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("robustlab.utils.os.replace", full)
    overrides = [f"ckpt={checkpoint('standard')}", "attack=[fgsm]", "data.test_size=5", "logger=none", "progress=false"]
    cfg = make_cfg("eval", tmp_path, overrides)
    with pytest.raises(SystemExit) as exit_:
        one_line_errors(evaluate)(cfg)
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2 and len(err) == 1 and "Traceback" not in stderr, stderr
    assert err[0].startswith("error: cannot write") and "No space left on device" in err[0] and "fix:" in err[0]
    assert (tmp_path / "report.json").read_text() == KEPT
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


TENSOR_ROWS = {  # row: (x, y, fragments of the message)
    "wrong dtype": (torch.zeros(4, 1, 28, 28, dtype=torch.int32), torch.arange(4), ["x is torch.int32"]),
    "wrong shape": (torch.zeros(4, 28), torch.arange(4), ["x has shape (4, 28), not N images"]),
    "range outside [0,1]": (torch.full((4, 1, 28, 28), 255.0), torch.arange(4), ["ranges over [255, 255]"]),
    "labels outside the model's classes": (
        torch.zeros(4, 1, 28, 28),
        torch.tensor([0, 3, 9, 12]),
        ["labels up to 12, outside model TinyCNN's 10 classes"],
    ),
    "empty set": (torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), ["holds no images"]),
}


@pytest.mark.parametrize("row", list(TENSOR_ROWS))
def test_bad_tensor_files(row, tmp_path):
    x, y, fragments = TENSOR_ROWS[row]
    torch.save({"x": x, "y": y}, tmp_path / "images.pt")
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(KEPT)
    args = [
        f"ckpt={checkpoint('standard')}",
        "data=tensors",
        f"data.path={tmp_path / 'images.pt'}",
        "data.family=mnist",
    ]
    _assert_one_line_error(run_in_process("evaluate.py", *args, "logger=none", f"hydra.run.dir={run}"), *fragments)
    assert (run / "report.json").read_text() == KEPT
