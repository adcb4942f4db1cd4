"""TRADES (Zhang et al. 2019): clean cross-entropy plus a KL robustness regulariser."""

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.base import Attack, check_eps, random_like
from robustlab.defenses.adversarial import RegularisedAdversarialTraining


def trades_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES Eq. 5 (surrogate form): ``CE(f(x), y) + beta * KL(p(x) || p(x_adv))``, with the KL
    summed over classes and averaged over the batch (the reference code's ``sum / B``)."""
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * kl


class TradesKLAttack(Attack):
    """TRADES' inner maximisation: from ``x + init_std * N(0, I)``, ``steps`` sign steps of size
    ``step`` ascending ``KL(p(x) || p(x_adv))``, projected onto the Linf ``eps`` ball and [0,1]."""

    name = "trades_kl"

    def __init__(self, eps: float = 0.031, step: float = 0.007, steps: int = 10, init_std: float = 0.001):
        super().__init__()
        self.eps, self.step = check_eps(eps), check_eps(step, "step")
        self.steps, self.init_std = int(steps), check_eps(init_std, "init_std")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        with torch.no_grad():
            p_clean = F.softmax(model(x), 1)
        x_adv = (x + self.init_std * random_like(x, seeds, "normal")).clamp(0, 1)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + self.step * grad.sign(), x - self.eps), x + self.eps)
            x_adv = x_adv.clamp(0, 1)
        return x_adv


class TRADES(RegularisedAdversarialTraining):
    """Minimise :func:`trades_loss` on examples from :class:`TradesKLAttack` (generated in eval
    mode by default, as the reference code does); ``beta`` trades accuracy for robustness."""

    objective = staticmethod(trades_loss)
