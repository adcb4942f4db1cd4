"""MART (Wang et al. 2020): misclassification-aware adversarial training."""
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.defenses.adversarial import AdversarialTraining


def mart_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART Eq. 9: ``BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x))``, where the
    boosted CE adds ``-log(1 - max_{k != y} p_k(x_adv))`` to the CE on x_adv; batch mean."""
    p_adv, p = F.softmax(logits_adv, 1), F.softmax(logits, 1)
    runner_up = p_adv.scatter(1, y[:, None], float("-inf")).argmax(1)
    boost = -torch.log(1.0001 - p_adv.gather(1, runner_up[:, None]).squeeze(1) + 1e-12)
    bce = F.cross_entropy(logits_adv, y, reduction="none") + boost
    kl = (p * (torch.log(p + 1e-12) - torch.log(p_adv + 1e-12))).sum(1)
    return (bce + beta * kl * (1 - p.gather(1, y[:, None]).squeeze(1))).mean()


class MART(AdversarialTraining):
    """Minimise :func:`mart_loss` on PGD (cross-entropy) examples."""

    def __init__(self, net: nn.Module, attack: PGD, beta: float = 6.0, warmup_epochs: float = 0.0,
                 attack_mode: str = "eval", optimizer: Callable | None = None, scheduler: Callable | None = None,
                 scheduler_interval: str = "step"):
        super().__init__(net, attack, warmup_epochs, attack_mode, optimizer, scheduler, scheduler_interval)
        self.beta = beta

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = self.adversarial(x, y)
        return mart_loss(self.model(x), self.model(x_adv), y, self.beta)
