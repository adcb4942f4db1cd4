"""EAT: ensemble adversarial training (Tramer et al. 2018; DEEPSEC's EAT)."""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from robustlab.attacks import RFGSM
from robustlab.attacks.base import check_eps
from robustlab.defenses.adversarial import RegularisedAdversarialTraining
from robustlab.defenses.base import load_frozen
from robustlab.defenses.nat import mixed_loss
from robustlab.errors import RobustlabError


class EAT(RegularisedAdversarialTraining):
    """Minimise :func:`~robustlab.defenses.nat.mixed_loss` (``beta`` 1: ``(CE(x) + CE(x_adv)) / 2``)
    on R+FGSM examples (random sign step ``alpha``, then a gradient sign step of ``eps - alpha``).
    For every batch the source of the examples is drawn uniformly from the current model and the
    ``static`` pre-trained models (checkpoint paths, loaded ``weights_only`` and kept frozen). As in
    Tramer et al.'s and DEEPSEC's code the attack uses the source's own predictions as labels, which
    avoids label leaking. DEEPSEC: eps 0.3, alpha 0.05 (MNIST); eps 0.0625, alpha 0.03125 (CIFAR-10).
    ``stages`` is read by ``train.py`` only.
    """

    objective = staticmethod(mixed_loss)

    def __init__(
        self,
        net: nn.Module,
        static: Sequence[str] | str | None = None,
        eps: float = 0.3,
        alpha: float = 0.05,
        beta: float = 1.0,
        attack_mode: str = "eval",
        stages: Any = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        eps, alpha = check_eps(eps), check_eps(alpha, "alpha")
        if not 0 <= alpha <= eps or eps == 0:
            raise RobustlabError(
                f"EAT needs 0 <= alpha <= eps and eps > 0, got alpha {alpha} and eps {eps}",
                "set defense.alpha below defense.eps (DEEPSEC: 0.05 and 0.3 on MNIST)",
            )
        super().__init__(
            net,
            RFGSM(eps=eps, alpha_ratio=alpha / eps),
            beta,
            0.0,
            attack_mode,
            optimizer,
            scheduler,
            scheduler_interval,
        )
        paths = [static] if isinstance(static, str) else list(static or [])
        self._static = [load_frozen(path) for path in paths]  # a list: out of state_dict and optimiser

    def on_fit_start(self) -> None:
        if not self._static:
            raise RobustlabError(
                "EAT has no static source models",
                "pass defense.static=[ckpt,...] or keep defense.stages.static to train them first",
            )

    def source(self) -> nn.Module:
        """The model examples are generated on for this batch: 0 is the current model."""
        k = int(torch.randint(len(self._static) + 1, ()))
        return self.model if k == 0 else self._static[k - 1].to(self.device)

    def generate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        source = self.source()
        with torch.no_grad():
            labels = source(x).argmax(1)
        return self.attack(source, x, labels)
