"""Transfer attack: generate adversarial examples on a surrogate model, evaluate them on the target."""

from pathlib import Path

import torch
from torch import nn

from robustlab.attacks.base import Attack, Wrapper
from robustlab.checkpoint import load_model
from robustlab.errors import RobustlabError
from robustlab.success import goal_met


class TransferAttack(Wrapper):
    """Runs ``attack`` on ``surrogate`` (a ``train.py`` checkpoint path, loaded with
    ``weights_only=True`` on first use, or an ``nn.Module``; required) and hands its examples to the target model, which
    is queried once per example to decide success. The target's gradients are never used.

    A targeted inner attack picks its targets on the surrogate. ``last_iterations`` is the inner
    attack's; ``last_queries`` is 1 (the target's one look at each example); ``last_surrogate_success`` is the inner
    attack's success on the surrogate (the ``transfer failure`` check compares the two).
    """

    name = "transfer"
    kind = "blackbox"

    def __init__(self, attack: Attack, surrogate: str | Path | nn.Module | None = None):
        super().__init__(attack)
        self.surrogate = surrogate
        self._model: nn.Module | None = surrogate if isinstance(surrogate, nn.Module) else None

    def _surrogate(self, device: torch.device) -> nn.Module:
        if self._model is None:
            if not isinstance(self.surrogate, (str, Path)) or not str(self.surrogate):
                raise RobustlabError(
                    "TransferAttack has no surrogate model",
                    "set attack.<name>.surrogate= the checkpoint path that train.py printed",
                )
            self._model = load_model(self.surrogate)
        return self._model.to(device)

    def _targets(self, model, x, y, seeds, target):
        return super()._targets(self._surrogate(x.device), x, y, seeds, target)

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        x_adv = self.attack(self._surrogate(x.device), x, y, seeds=seeds, target=target)
        with torch.no_grad():
            logits = model(x_adv)
        self.keep_logits(torch.arange(len(x), device=x.device), logits)
        self.last_success = goal_met(logits.argmax(1), y, target)
        self.last_iterations = self.attack.last_iterations
        self.last_surrogate_success = self.attack.last_success
        self.last_queries = torch.ones(len(x), dtype=torch.long, device=x.device)
        return x_adv

    def __repr__(self) -> str:
        surrogate = type(self.surrogate).__name__ if isinstance(self.surrogate, nn.Module) else self.surrogate
        return f"TransferAttack(attack={self.attack!r}, surrogate={surrogate})"
