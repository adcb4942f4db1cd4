"""PGD adversarial training (Madry et al. 2018; DEEPSEC's PAT)."""
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.defenses.base import RobustClassifier
from robustlab.errors import RobustlabError
from robustlab.utils import eval_mode


class PGDAdversarialTraining(RobustClassifier):
    """Minimise the loss on PGD examples generated on the fly.

    * ``loss``: ``"adversarial"`` (Madry: CE on x_adv only) or ``"mixed"``
      (``(1 - adv_weight) * CE(x) + adv_weight * CE(x_adv)``).
    * ``warmup_epochs``: the attack schedule; eps and step grow linearly from 0 to their
      configured values over this many epochs (per optimiser step), then stay constant.
    * ``attack_mode``: ``"eval"`` (default) generates examples with BN/dropout in eval mode,
      restoring each module's own mode afterwards; ``"train"`` generates them in train mode.
    """

    def __init__(self, net: nn.Module, attack: PGD, loss: str = "adversarial", adv_weight: float = 0.5,
                 warmup_epochs: float = 0.0, attack_mode: str = "eval", optimizer: Callable | None = None,
                 scheduler: Callable | None = None, scheduler_interval: str = "step"):
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        if loss not in ("adversarial", "mixed"):
            raise RobustlabError(f"unknown PGD-AT loss {loss!r}", "use defense.loss=adversarial or defense.loss=mixed")
        if attack_mode not in ("eval", "train"):
            raise RobustlabError(f"unknown attack_mode {attack_mode!r}", "use defense.attack_mode=eval or train")
        self.attack, self.loss_kind, self.adv_weight = attack, loss, adv_weight
        self.warmup_epochs, self.attack_mode = warmup_epochs, attack_mode
        self.eps, self.step = attack.eps, attack.step

    def schedule(self) -> float:
        """Fraction of the final eps used at the current optimiser step."""
        if self.warmup_epochs <= 0 or self._trainer is None:
            return 1.0
        steps_per_epoch = max(self.trainer.num_training_batches, 1)
        return min(1.0, (self.global_step + 1) / (self.warmup_epochs * steps_per_epoch))

    def adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        frac = self.schedule()
        self.attack.eps, self.attack.step = self.eps * frac, self.step * frac
        if self.attack_mode == "eval":
            with eval_mode(self.model):
                return self.attack(self.model, x, y)
        return self.attack(self.model, x, y)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = self.adversarial(x, y)
        adv_loss = F.cross_entropy(self.model(x_adv), y)
        self.log("train/eps", self.attack.eps)
        if self.loss_kind == "adversarial":
            return adv_loss
        return (1 - self.adv_weight) * F.cross_entropy(self.model(x), y) + self.adv_weight * adv_loss
