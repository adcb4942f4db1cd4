"""Resumable training: ``train.py`` killed with SIGKILL at a random point and resumed with ``resume=true`` ends with
the weights of an uninterrupted run, bit for bit (CPU, ``trainer.deterministic=true``); a distillation run killed
after its teacher finished resumes without training the teacher again; ``resume=`` of another run is one line."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from robustlab.tasks import STOP_GRACE_S
from robustlab.train import train
from tests.helpers import ROOT, make_cfg, run_cli
from tests.test_cli import _assert_one_line_error

BASE = [
    "model._target_=tests.regression.tiny.TinyCNN",
    "data.train_size=1000",
    "data.val_size=100",
    "attack=[]",
    "test=false",
    "logger=none",
    "trainer.deterministic=true",
    "trainer.max_epochs=8",
    "callbacks.coverage_profile=null",
]
PGD_AT = [*BASE, "defense=pgd_at", "defense.attack.steps=3"]


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def kill_when(run_dir, args, ready, delay=0.0):
    """Start ``train.py args`` in its own process group and SIGKILL it ``delay`` seconds after ``ready()``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.02)
    time.sleep(delay)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    full = train(make_cfg("train", tmp_path / "full", PGD_AT))
    run = tmp_path / "killed"
    last = run / "checkpoints" / "last.ckpt"
    kill_when(run, PGD_AT, last.is_file, delay=random.uniform(0.0, 0.6))
    epoch = torch.load(last, weights_only=True)["epoch"]
    assert epoch < 7, "killed after the last epoch: nothing left to resume"
    resumed = train(make_cfg("train", run, [*PGD_AT, "resume=true"]))
    one, two = weights(full["checkpoint"]), weights(resumed["checkpoint"])
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one), f"killed after epoch {epoch}"
    assert torch.load(resumed["checkpoint"], weights_only=True)["epoch"] == 7


def test_killed_distillation_keeps_its_finished_teacher(tmp_path):
    dd = [*BASE, "defense=distillation", "trainer.max_epochs=3"]
    full = train(make_cfg("train", tmp_path / "full", dd))
    run = tmp_path / "killed"
    teacher_summary = run / "teacher" / "summary.json"
    kill_when(run, dd, teacher_summary.is_file)
    teacher = json.loads(teacher_summary.read_text())["checkpoint"]
    written = os.stat(teacher).st_mtime_ns
    resumed = train(make_cfg("train", run, [*dd, "resume=true"]))
    assert os.stat(teacher).st_mtime_ns == written  # not trained again
    assert resumed["stages"]["teacher"] == teacher
    one, two = weights(full["checkpoint"]), weights(resumed["checkpoint"])
    assert all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("row", ["another seed", "truncated"])
def test_bad_resume_is_one_line(row, tmp_path):
    small = [*BASE, "defense=standard", "trainer.max_epochs=1"]
    summary = train(make_cfg("train", tmp_path / "done", small))
    path = summary["checkpoint"]
    if row == "truncated":
        cut = tmp_path / "cut.ckpt"
        cut.write_bytes(open(path, "rb").read()[:2000])
        path, fragment, extra = cut, "is not a readable PyTorch checkpoint", []
    else:
        fragment, extra = "and seed", ["seed=1"]
    result = run_cli("train.py", *small, *extra, f"resume={path}", f"hydra.run.dir={tmp_path / 'run'}")
    _assert_one_line_error(result, fragment)


def test_sigterm_mid_epoch_saves_a_checkpoint_that_resumes_to_the_same_weights(tmp_path):
    """SIGTERM in the middle of an epoch: the batch ends, ``last.ckpt`` is written at it, the process exits with
    143, and the resumed run (same batches, augmentations and attack draws onward) ends with equal weights."""
    args = [*PGD_AT, "data.batch_size=20", "trainer.max_epochs=3"]
    full = train(make_cfg("train", tmp_path / "full", args))
    run = tmp_path / "stopped"
    last = run / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "train.py", *args, f"hydra.run.dir={run}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not last.is_file():
        time.sleep(0.02)
    time.sleep(random.uniform(0.1, 0.8))
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert time.time() - sent < STOP_GRACE_S
    assert err.strip().splitlines()[-1].startswith("stopped: received SIGTERM")
    state = torch.load(last, weights_only=True)
    done = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"]
    assert 0 < done < 50, f"stopped at batch {done} of 50: not in the middle of an epoch"
    print(f"stopped at batch {done} of 50 in epoch {state['epoch']}")
    resumed = train(make_cfg("train", run, [*args, "resume=true"]))
    one, two = weights(full["checkpoint"]), weights(resumed["checkpoint"])
    assert all(torch.equal(one[k], two[k]) for k in one), f"stopped at batch {done} of epoch {state['epoch']}"
