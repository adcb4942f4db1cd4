"""PGD adversarial training (Madry et al. 2018; DEEPSEC's PAT)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.defenses.adversarial import AdversarialTraining
from robustlab.errors import RobustlabError


class PGDAdversarialTraining(AdversarialTraining):
    """Minimise the loss on PGD examples generated on the fly.

    ``loss``: ``"adversarial"`` (Madry: CE on x_adv only) or ``"mixed"``
    (``(1 - adv_weight) * CE(x) + adv_weight * CE(x_adv)``). With a one-step attack
    (``configs/defense/fgsm_at.yaml``) this is single-step AT (SAT), with a random start the
    "fast" variant of Wong et al. 2020. Schedule and generation mode: see
    :class:`AdversarialTraining`.
    """

    def __init__(
        self,
        net: nn.Module,
        attack: PGD,
        loss: str = "adversarial",
        adv_weight: float = 0.5,
        warmup_epochs: float = 0.0,
        attack_mode: str = "eval",
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, attack, warmup_epochs, attack_mode, optimizer, scheduler, scheduler_interval)
        if loss not in ("adversarial", "mixed"):
            raise RobustlabError(f"unknown PGD-AT loss {loss!r}", "use defense.loss=adversarial or defense.loss=mixed")
        self.loss_kind, self.adv_weight = loss, adv_weight

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv_loss = F.cross_entropy(self.model(self.adversarial(x, y)), y)
        if self.loss_kind == "adversarial":
            return adv_loss
        return (1 - self.adv_weight) * F.cross_entropy(self.model(x), y) + self.adv_weight * adv_loss
