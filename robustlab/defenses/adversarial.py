"""Shared base of the adversarial-training defenses: scheduled, mode-controlled example generation."""

from collections.abc import Callable

import torch
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.defenses.base import RobustClassifier
from robustlab.errors import RobustlabError
from robustlab.utils import eval_mode


class AdversarialTraining(RobustClassifier):
    """Generates training examples with ``attack`` on the fly; subclasses define the loss.

    * ``warmup_epochs``: the attack schedule; the attack's budget (eps and step sizes, its
      ``budget_fields``) grows linearly from 0 to the configured values over this many epochs (per
      optimiser step), then stays constant (:meth:`~robustlab.attacks.base.Attack.scale_budget`).
    * ``attack_mode``: ``"eval"`` (default) generates examples with BN/dropout in eval mode,
      restoring each module's own mode afterwards; ``"train"`` leaves the modes as they are.
    """

    def __init__(
        self,
        net: nn.Module,
        attack: Attack,
        warmup_epochs: float = 0.0,
        attack_mode: str = "eval",
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        if attack_mode not in ("eval", "train"):
            raise RobustlabError(f"unknown attack_mode {attack_mode!r}", "use defense.attack_mode=eval or train")
        self.attack, self.warmup_epochs, self.attack_mode = attack, warmup_epochs, attack_mode

    def schedule(self) -> float:
        """Fraction of the final eps used at the current optimiser step."""
        if self.warmup_epochs <= 0 or self._trainer is None:
            return 1.0
        steps_per_epoch = max(self.trainer.num_training_batches, 1)
        return min(1.0, (self.global_step + 1) / (self.warmup_epochs * steps_per_epoch))

    def generate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inner maximisation; by default the configured attack."""
        return self.attack(self.model, x, y)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train/eps", self.attack.eps)
        return loss

    def adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training examples for ``(x, y)`` at the scheduled budget, in the configured mode."""
        self.attack.scale_budget(self.schedule())
        if self.attack_mode == "eval":
            with eval_mode(self.model):
                return self.generate(x, y)
        return self.generate(x, y)


class RegularisedAdversarialTraining(AdversarialTraining):
    """Minimise ``objective(f(x), f(x_adv), y, beta)``: a loss on clean and adversarial logits
    with a robustness trade-off ``beta`` (TRADES, MART). Subclasses set ``objective``."""

    objective: Callable[..., torch.Tensor]

    def __init__(
        self,
        net: nn.Module,
        attack: Attack,
        beta: float = 6.0,
        warmup_epochs: float = 0.0,
        attack_mode: str = "eval",
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, attack, warmup_epochs, attack_mode, optimizer, scheduler, scheduler_interval)
        self.beta = beta

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = self.adversarial(x, y)
        return self.objective(self.model(x), self.model(x_adv), y, self.beta)
