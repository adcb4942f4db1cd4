"""Input gradient regularisation (Ross & Doshi-Velez 2018; DEEPSEC's IGR)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses.base import RobustClassifier
from robustlab.errors import RobustlabError

SCALINGS = ("batch", "per_example")


def input_gradient_penalty(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, scaling: str = "batch"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and the input-gradient penalty, kept differentiable (double backprop).

    * ``"batch"`` (DEEPSEC's code): ``||grad_x mean_n CE_n||_2^2`` over the whole batch, which is
      ``mean_n ||grad_x CE_n||^2 / B``; DEEPSEC's lambda values (316 MNIST, 10 CIFAR) assume it.
    * ``"per_example"`` (Ross & Doshi-Velez Eq. 2 up to the batch mean): ``mean_n ||grad_x CE_n||^2``.
    """
    x = x.detach().requires_grad_(True)
    losses = F.cross_entropy(model(x), y, reduction="none")
    if scaling == "batch":
        (grad,) = torch.autograd.grad(losses.mean(), x, create_graph=True)
        return losses.mean(), grad.pow(2).sum()
    (grad,) = torch.autograd.grad(losses.sum(), x, create_graph=True)
    return losses.mean(), grad.flatten(1).pow(2).sum(1).mean()


class IGR(RobustClassifier):
    """Minimise ``CE + lam * penalty`` (see :func:`input_gradient_penalty` for ``scaling``).
    A gradient-masking defense: evaluate it with a gradient-free attack as well."""

    def __init__(
        self,
        net: nn.Module,
        lam: float = 316.0,
        scaling: str = "batch",
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        if scaling not in SCALINGS:
            raise RobustlabError(f"unknown IGR scaling {scaling!r}", f"use defense.scaling={' or '.join(SCALINGS)}")
        self.lam, self.scaling = lam, scaling

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce, penalty = input_gradient_penalty(self.model, x, y, self.scaling)
        self.log("train/grad_penalty", penalty)
        return ce + self.lam * penalty
