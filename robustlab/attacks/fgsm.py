"""Single-step attacks: FGSM, R+FGSM and R+LLC."""

import torch
from torch import nn

from robustlab.attacks.base import Attack, check_eps, input_gradient, random_like
from robustlab.errors import RobustlabError


class FGSM(Attack):
    """One step ``x + eps * sign(grad_x CE)``, clipped to [0,1] (Goodfellow et al. 2015).
    DEEPSEC default eps: 0.3 MNIST, 0.1 CIFAR."""

    name = "fgsm"

    def __init__(self, eps: float = 0.3):
        super().__init__()
        self.eps = check_eps(eps)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        grad, _ = input_gradient(model, x, y)
        return (x + self.eps * grad.sign()).clamp(0, 1)


class RFGSM(Attack):
    """R+FGSM (Tramer et al. 2018): a random sign step ``x' = x + alpha * sign(N(0, I))`` with
    ``alpha = alpha_ratio * eps``, then one gradient sign step of ``eps - alpha`` from ``x'``; both
    clipped to [0,1]. The random step is seeded per example by ``seeds``.
    DEEPSEC: eps 0.3 / 0.1, alpha_ratio 0.5."""

    name = "rfgsm"

    def __init__(self, eps: float = 0.3, alpha_ratio: float = 0.5):
        super().__init__()
        self.eps = check_eps(eps)
        if not 0 <= alpha_ratio <= 1:
            raise RobustlabError(f"alpha_ratio must lie in [0,1], got {alpha_ratio!r}", "use e.g. 0.5 (DEEPSEC)")
        self.alpha_ratio = float(alpha_ratio)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        alpha = self.alpha_ratio * self.eps
        x_rand = (x + alpha * random_like(x, seeds, "normal").sign()).clamp(0, 1)
        grad, _ = input_gradient(model, x_rand, y, target)
        return (x_rand + (self.eps - alpha) * grad.sign()).clamp(0, 1)


class RLLC(RFGSM):
    """R+LLC (Tramer et al. 2018): R+FGSM's random sign step, then one signed step of
    ``eps - alpha`` towards the clean image's least-likely class (or ``target=``).
    DEEPSEC: eps 0.3 / 0.1, alpha_ratio 0.5."""

    name = "rllc"
    targeted = True
    target_rule = "least_likely"
