"""Resumable evaluation (robustlab.evaluation.journal): an ``evaluate.py`` killed with SIGKILL after some batches and
resumed with ``resume=true`` writes the report of an uninterrupted run, redoing at most the batch it was killed in,
on one process and under ``trainer=ddp_cpu``; resuming another run, or from an unreadable journal, is one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from robustlab.evaluate import evaluate
from tests.helpers import ROOT, make_cfg, run_cli
from tests.regression.cases import checkpoint
from tests.test_cli import _assert_one_line_error
from tests.test_evaluate import _assert_same

N, BATCH = 600, 100
ARGS = [
    f"ckpt={checkpoint('standard')}",
    "attack=[pgd_linf]",
    "attack.pgd_linf.steps=10",
    "metric=[acac,actc,aldp,ass,psd,nte,rgb,ric]",
    f"data.test_size={N}",
    f"data.eval_batch_size={BATCH}",
    "logger=none",
    "progress=false",
]
VOLATILE = {"seconds", "CC", "fit_seconds", "timings", "world_size", "run"}


def numbers(report):
    return {k: numbers(v) for k, v in report.items() if k not in VOLATILE} if isinstance(report, dict) else report


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    return evaluate(make_cfg("eval", out, ARGS))


def kill_after(run_dir, extra=(), batches=2, ranks=1):
    """Start ``evaluate.py`` in its own process group, SIGKILL the group once every rank has journaled ``batches``
    batches, and return the batch count each rank's journal holds."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "evaluate.py", *ARGS, *extra, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    journals = [run_dir / "journal" / f"rank{r}.pt" for r in range(ranks)]

    def done(path):
        try:
            return torch.load(path, weights_only=True)["batches"] if path.is_file() else 0
        except Exception:  # being renamed in place
            return 0

    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and min(done(p) for p in journals) < batches:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.5)  # DDP children die with the group
    return [done(p) for p in journals]


RANDOMISED = [f"ckpt={checkpoint('rt')}", "eot_samples=2", "eval_draws=3", "attack.pgd_linf.steps=3"]


def test_killed_randomised_evaluation_resumes_with_its_noise_stream(tmp_path):
    """A randomised defense (RT) draws from the global RNG: the journal's RNG state makes the resumed draws those
    of an uninterrupted run."""
    uninterrupted = evaluate(make_cfg("eval", tmp_path / "full", [*ARGS, *RANDOMISED]))
    assert uninterrupted["defense_name"] == "rt" and uninterrupted["clean"]["draws"] == 3
    run = tmp_path / "killed"
    journaled = kill_after(run, RANDOMISED)
    assert 2 <= journaled[0] < N // BATCH, journaled
    assert numbers(evaluate(make_cfg("eval", run, [*ARGS, *RANDOMISED, "resume=true"]))) == numbers(uninterrupted)


def test_killed_evaluation_resumes_to_the_uninterrupted_report(uninterrupted, tmp_path):
    journaled = kill_after(tmp_path)
    assert 2 <= journaled[0] < N // BATCH, journaled
    assert not (tmp_path / "report.json").exists()
    cfg = make_cfg("eval", tmp_path, [*ARGS, "resume=true"])
    resumed = evaluate(cfg)
    assert numbers(resumed) == numbers(uninterrupted)
    assert json.loads((tmp_path / "report.json").read_text())["clean"]["n_samples"] == N
    # the journal held every batch the killed run finished, so only the batch it was killed in is redone
    assert torch.load(tmp_path / "journal" / "rank0.pt", weights_only=True)["batches"] == N // BATCH


def test_killed_ddp_evaluation_resumes_per_process(uninterrupted, tmp_path):
    journaled = kill_after(tmp_path, ["trainer=ddp_cpu"], batches=1, ranks=2)
    assert min(journaled) >= 1 and min(journaled) < N // BATCH // 2, journaled
    result = run_cli("evaluate.py", *ARGS, "trainer=ddp_cpu", "resume=true", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((tmp_path / "report.json").read_text())
    assert resumed["world_size"] == 2  # equal to one process's report up to float summation order, as without resume
    _assert_same(numbers(json.loads(json.dumps(uninterrupted))), numbers(resumed))
    assert f"resumed: {min(journaled)}" in result.stdout or f"resumed: {max(journaled)}" in result.stdout


@pytest.mark.parametrize("change, fragment", [(["seed=1"], "seed"), (["attack.pgd_linf.steps=11"], "steps")])
def test_resuming_another_run_is_one_line(change, fragment, tmp_path):
    small = [a for a in ARGS if not a.startswith("data.test_size")] + ["data.test_size=200"]
    evaluate(make_cfg("eval", tmp_path, small))
    (tmp_path / "report.json").write_text('{"kept": true}\n')
    args = [*small, *change, "resume=true", f"hydra.run.dir={tmp_path}"]
    _assert_one_line_error(run_cli("evaluate.py", *args), "is of another run", fragment)
    assert (tmp_path / "report.json").read_text() == '{"kept": true}\n'


def test_an_unreadable_journal_falls_back_to_the_previous_entry_then_fails_in_one_line(uninterrupted, tmp_path):
    args = ARGS
    evaluate(make_cfg("eval", tmp_path, args))
    journal = tmp_path / "journal"
    latest, previous = journal / "rank0.pt", journal / "rank0.prev.pt"
    assert torch.load(previous, weights_only=True)["batches"] == N // BATCH - 1
    latest.write_bytes(latest.read_bytes()[:100])  # a copy cut short
    report = evaluate(make_cfg("eval", tmp_path, [*args, "resume=true"]))
    assert numbers(report) == numbers(uninterrupted)
    for path in (latest, previous):
        path.write_bytes(b"\0" * 64)
    result = run_cli("evaluate.py", *args, "resume=true", f"hydra.run.dir={tmp_path}")
    _assert_one_line_error(result, "cannot be read")
