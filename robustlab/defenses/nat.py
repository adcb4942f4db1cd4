"""NAT (Kurakin et al. 2017, "Adversarial machine learning at scale"; DEEPSEC's NAT)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import LLC
from robustlab.attacks.base import check_eps
from robustlab.defenses.adversarial import RegularisedAdversarialTraining


def mixed_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """Kurakin et al. Eq. 1 with every example used clean and adversarial (DEEPSEC's form):
    ``(CE(f(x), y) + beta * CE(f(x_adv), y)) / (1 + beta)``."""
    return (F.cross_entropy(logits, y) + beta * F.cross_entropy(logits_adv, y)) / (1 + beta)


class NAT(RegularisedAdversarialTraining):
    """Minimise :func:`mixed_loss` (``beta`` 0.3) on one-step least-likely-class examples
    (:class:`~robustlab.attacks.LLC`) whose eps is drawn per example as ``|N(0, sigma)|`` clipped
    to ``[0, eps_max]`` (DEEPSEC: sigma 50/255, max 0.3 MNIST; 15/255, max 0.1 CIFAR-10). The
    least-likely class avoids label leaking; examples are generated in eval mode by default."""

    objective = staticmethod(mixed_loss)

    def __init__(
        self,
        net: nn.Module,
        sigma: float = 50 / 255,
        eps_max: float = 0.3,
        beta: float = 0.3,
        attack_mode: str = "eval",
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, LLC(eps=eps_max), beta, 0.0, attack_mode, optimizer, scheduler, scheduler_interval)
        self.sigma, self.eps_max = check_eps(sigma, "sigma"), float(eps_max)

    def sample_eps(self, n: int, device: torch.device) -> torch.Tensor:
        """Per-example budgets ``clip(|N(0, sigma)|, 0, eps_max)``, shape ``(n,)``."""
        return (torch.randn(n, device=device) * self.sigma).abs().clamp(max=self.eps_max)

    def generate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = self.sample_eps(len(x), x.device)
        self.attack.eps = self.attack.step = eps.view(-1, *([1] * (x.dim() - 1)))  # LLC broadcasts per example
        try:
            return self.attack(self.model, x, y)
        finally:
            self.attack.eps = self.attack.step = eps.mean().item()  # the logged train/eps: the batch mean
