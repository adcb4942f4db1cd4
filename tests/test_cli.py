"""Bad input on the command line gets one line naming the problem and the fix, never a traceback. Each script runs
as a subprocess in some tests, as a user runs it; the other error rows run it in this process (``run_in_process``)."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from robustlab.tasks import LOCK_NAME
from tests.helpers import ROOT, run_cli, run_in_process
from tests.regression.cases import checkpoint


class _Payload:
    """Pickles to a call that would create a file if the checkpoint were unpickled unsafely."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "fix:" in lines[0] and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_checkpoint(tmp_path):
    _assert_one_line_error(
        run_cli("evaluate.py", f"ckpt={tmp_path / 'nope.ckpt'}", "logger=none", f"hydra.run.dir={tmp_path}"),
        "checkpoint not found",
    )


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    _assert_one_line_error(
        run_in_process("evaluate.py", f"ckpt={path}", "logger=none", f"hydra.run.dir={tmp_path}"),
        "not a robustlab checkpoint",
    )


def test_not_a_checkpoint_at_all(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("hello")
    _assert_one_line_error(
        run_in_process("evaluate.py", f"ckpt={path}", "logger=none", f"hydra.run.dir={tmp_path}"),
        "not a readable PyTorch checkpoint",
    )


def test_pickled_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"robustlab": {}, "state_dict": {}, "x": _Payload(marker)}, f)
    torch.save({"robustlab": {}, "state_dict": {}, "payload": _Payload(marker)}, tmp_path / "evil2.ckpt")
    marker.unlink(missing_ok=True)
    for ckpt in (path, tmp_path / "evil2.ckpt"):
        _assert_one_line_error(
            run_cli("evaluate.py", f"ckpt={ckpt}", "logger=none", f"hydra.run.dir={tmp_path}"), "refused"
        )
    assert not marker.exists()


@pytest.mark.parametrize(
    "script, args, fragment",
    [
        ("train.py", ["defense=nonsense"], "unknown defense option 'nonsense'"),
        ("evaluate.py", ["attack=[fgsm,nope]"], "unknown attack option 'nope'"),
        ("train.py", ["data=cifar100"], "unknown data option 'cifar100'"),
        ("train.py", ["trainer.max_epoch=3"], "unknown config key"),
        ("train.py", ["-m", "hydra/launcher=slurm", "seed=0,1"], "unknown hydra/launcher option 'slurm'"),
        ("train.py", ["-m", "hydra/launcher=submitit_local", "hydra.launcher.nodez=2"], "'hydra.launcher.nodez'"),
        ("train.py", ["defense.attack.eps=-1", "logger=none"], "eps must be a finite number >= 0"),
        ("train.py", ["defense.attack.norm=l3", "logger=none"], "unknown norm 'l3'"),
    ],
)
def test_unknown_config(script, args, fragment, tmp_path):
    _assert_one_line_error(run_in_process(script, *args, f"hydra.run.dir={tmp_path}"), fragment)


def test_incompatible_model_and_data(tmp_path):
    _assert_one_line_error(
        run_cli("train.py", "data=digits", "data.image_size=8", "logger=none", f"hydra.run.dir={tmp_path}"),
        "model MNISTCNN expects 1x28x28",
    )


def test_attack_under_inference_mode(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    _assert_one_line_error(
        run_cli(
            "evaluate.py",
            f"ckpt={summary['checkpoint']}",
            "trainer.inference_mode=true",
            "logger=none",
            f"hydra.run.dir={tmp_path}",
        ),
        "inference_mode",
    )


def test_multirun_writes_one_report_per_job(tmp_path):
    from tests.regression.cases import checkpoint

    ckpts = [checkpoint("standard"), checkpoint("pgd_at")]
    result = run_cli(
        "evaluate.py",
        "-m",
        f"ckpt={ckpts[0]},{ckpts[1]}",
        "data.test_size=20",
        "logger=none",
        "progress=false",
        "attack=[fgsm]",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    reports = [json.loads((tmp_path / str(job) / "report.json").read_text()) for job in (0, 1)]
    assert [r["defense_name"] for r in reports] == ["standard", "pgd_at"]
    assert all(r["clean"]["n_samples"] == 20 for r in reports)


def test_a_bad_value_in_a_sweep_is_one_line(tmp_path):
    _assert_one_line_error(
        run_cli("evaluate.py", "-m", "attack=fgsm,nope", "logger=none", f"hydra.sweep.dir={tmp_path}"),
        "unknown attack option 'nope'",
    )
    assert not any(tmp_path.iterdir())


def test_a_second_run_in_a_locked_run_directory_refuses_and_loses_nothing(pgd_at_run, tmp_path):
    """A live process holds the run directory's lock: the second evaluation names it, exits 2 and leaves the
    directory's report alone; a lock left by a dead process is taken over."""
    summary, _ = pgd_at_run
    report = tmp_path / "report.json"
    report.write_text('{"kept": true}\n')
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{holder.pid} {socket.gethostname()}")
        args = [f"ckpt={summary['checkpoint']}", "attack=[fgsm]", "data.test_size=10", "logger=none"]
        result = run_cli("evaluate.py", *args, f"hydra.run.dir={tmp_path}")
        _assert_one_line_error(result, "in use by process", str(holder.pid), "another hydra.run.dir")
        assert report.read_text() == '{"kept": true}\n'
    finally:
        holder.kill()
        holder.wait()
    result = run_cli("evaluate.py", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "attacks" in report.read_text() and not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_an_evaluation_mid_batch(sig, tmp_path):
    """SIGTERM or SIGINT in the middle of a long attack: the process stops within seconds (not at the end of the
    batch), with one line, status 128 + the signal, its loggers finished and its run-directory lock released."""
    args = [f"ckpt={checkpoint('standard')}", "attack=[pgd_linf]", "attack.pgd_linf.steps=1000000", "logger=none"]
    args.append("attack.pgd_linf.early_stop=false")  # every example keeps being attacked, broken or not
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "evaluate.py", *args, "data.test_size=20", "progress=false", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("evaluating"):
                break
        time.sleep(3)  # inside the attack's batch by now
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(sig)
        start = time.perf_counter()
        _, stderr = proc.communicate(timeout=60)
        waited = time.perf_counter() - start
    finally:
        proc.kill()
    print(f"stopped {waited:.1f} s after {sig.name}")
    lines = [line for line in stderr.splitlines() if line.startswith(("stopped", "error", "Traceback"))]
    assert proc.returncode == 128 + sig and lines == [lines[0]] and lines[0].startswith(f"stopped: received {sig.name}")
    assert waited < 15 and not (tmp_path / LOCK_NAME).exists() and not (tmp_path / "report.json").exists()
