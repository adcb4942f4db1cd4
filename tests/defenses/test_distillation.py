"""DD: the student's soft-label loss is the cross-entropy at T against the teacher's soft labels,
by hand; one command trains teacher then student, and a student failure keeps the teacher."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax
from torch import nn

import robustlab
from robustlab import RobustlabError
from robustlab.checkpoint import read_checkpoint
from robustlab.cli import robustlab_cause
from robustlab.defenses import DefensiveDistillation, DistillationTeacher
from robustlab.defenses.distillation import soft_label_loss
from robustlab.evaluate import evaluate
from robustlab.train import train
from tests.helpers import make_cfg

T = 50.0


def _linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).double()


def test_student_loss_is_cross_entropy_at_t_against_teacher_soft_labels():
    teacher, student = _linear(0), _linear(1)
    for p in teacher.parameters():
        p.data.mul_(200)  # large logits, so that T matters
    module = DefensiveDistillation(student, temperature=T)
    module._teacher = [teacher]
    x, y = torch.rand(5, 3, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    with torch.no_grad():
        z_t, z_s = teacher(x).numpy(), student(x).numpy()
    expected = -(softmax(z_t / T, 1) * log_softmax(z_s / T, 1)).sum(1).mean()
    assert module.training_loss(x, y).item() == pytest.approx(expected, rel=1e-12)
    assert soft_label_loss(torch.tensor(z_s), torch.tensor(z_t), T).item() == pytest.approx(expected, rel=1e-12)
    at_one = -(softmax(z_t, 1) * log_softmax(z_s, 1)).sum(1).mean()
    assert abs(expected - at_one) > 1e-3, "the temperature changes the loss"
    grads = torch.autograd.grad(module.training_loss(x, y), list(student.parameters()))
    assert all(g.abs().sum() > 0 for g in grads) and all(p.grad is None for p in teacher.parameters())


def test_teacher_loss_is_cross_entropy_of_logits_over_t():
    net = _linear(2)
    x, y = torch.rand(5, 3, 2, 2, dtype=torch.float64), np.array([0, 1, 2, 3, 0])
    with torch.no_grad():
        z = net(x).numpy()
    expected = -log_softmax(z / T, 1)[np.arange(5), y].mean()
    loss = DistillationTeacher(net, temperature=T).training_loss(x, torch.tensor(y))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


SMALL = ["defense=distillation", "data.val_size=100", "trainer.max_epochs=1", "logger=none", "attack=[]", "test=false"]


def test_one_command_trains_teacher_then_student(tmp_path):
    summary = train(make_cfg("train", tmp_path / "train", [*SMALL, "data.train_size=500"]))
    teacher_ckpt = tmp_path / "train" / "teacher" / "checkpoints" / "last.ckpt"
    assert summary["stages"] == {"teacher": str(teacher_ckpt.resolve())}
    meta = read_checkpoint(summary["checkpoint"])["robustlab"]
    assert meta["defense"] == "distillation" and meta["stages"]["teacher"] == str(teacher_ckpt.resolve())
    assert read_checkpoint(teacher_ckpt)["robustlab"]["defense"] == "distillation/teacher"
    assert robustlab.load_model(summary["checkpoint"])(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path / "eval",
            [f"ckpt={summary['checkpoint']}", "logger=none", "data.test_size=50", "attack=[fgsm]"],
        )
    )
    assert report["defense_name"] == "distillation" and report["clean"]["n_samples"] == 50


def test_student_failure_keeps_the_teacher_checkpoint(tmp_path, monkeypatch):
    def fail(self, x, y):
        raise RuntimeError("student stage failed")

    monkeypatch.setattr(DefensiveDistillation, "training_loss", fail)
    with pytest.raises(RuntimeError, match="student stage failed"):
        train(make_cfg("train", tmp_path, [*SMALL, "data.train_size=200"]))
    teacher = robustlab.load_model(tmp_path / "teacher" / "checkpoints" / "last.ckpt")
    assert teacher(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_given_teacher_skips_the_stage_and_a_missing_one_is_refused(tmp_path):
    with pytest.raises(Exception) as err:
        train(make_cfg("train", tmp_path, [*SMALL, "defense.teacher=/nonexistent.ckpt"]))
    assert "checkpoint not found" in str(robustlab_cause(err.value))
    assert not (tmp_path / "teacher").exists()
    module = DefensiveDistillation(_linear(0))
    with pytest.raises(RobustlabError, match="no teacher"):
        module.on_fit_start()
