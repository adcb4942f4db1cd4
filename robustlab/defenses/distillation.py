"""Defensive distillation (Papernot et al. 2016; DEEPSEC's DD)."""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses.base import RobustClassifier, load_frozen
from robustlab.errors import RobustlabError


def _check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise RobustlabError(f"distillation temperature must be > 0, got {temperature!r}", "set defense.temperature=50")
    return float(temperature)


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Papernot et al. Sec. IV-B (DEEPSEC's code): the cross-entropy of the student's softmax at
    temperature ``T`` against the teacher's soft labels at ``T``,
    ``mean_n -sum_k softmax(z_teacher / T)_k * log_softmax(z_student / T)_k``."""
    soft = F.softmax(teacher_logits / temperature, 1)
    return -(soft * F.log_softmax(student_logits / temperature, 1)).sum(1).mean()


class DistillationTeacher(RobustClassifier):
    """DD stage 1: the teacher, trained with cross-entropy on ``softmax(z / T)`` (hard labels)."""

    def __init__(
        self,
        net: nn.Module,
        temperature: float = 50.0,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        self.temperature = _check_temperature(temperature)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x) / self.temperature, y)


class DefensiveDistillation(RobustClassifier):
    """DD stage 2: the student, trained on the soft labels of ``teacher`` (a checkpoint of a
    :class:`DistillationTeacher` trained at the same ``temperature``, loaded ``weights_only`` and
    frozen, in eval mode) with :func:`soft_label_loss`; tested at T = 1, i.e. as the plain network.
    ``python train.py defense=distillation`` trains the teacher first when ``teacher`` is null.

    A gradient-masking defense: at T = 1 its softmax saturates, so evaluate it with a gradient-free
    attack too. ``stages`` is read by ``train.py`` only."""

    def __init__(
        self,
        net: nn.Module,
        teacher: str | None = None,
        temperature: float = 50.0,
        stages: Any = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        self.temperature = _check_temperature(temperature)
        self._teacher = [load_frozen(teacher)] if teacher else []  # a list: out of state_dict and optimiser

    def on_fit_start(self) -> None:
        if not self._teacher:
            raise RobustlabError(
                "defensive distillation has no teacher",
                "pass defense.teacher=<teacher ckpt> or keep defense.stages.teacher to train it first",
            )

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self._teacher[0].to(x.device)(x)
        return soft_label_loss(self.model(x), teacher_logits, self.temperature)
