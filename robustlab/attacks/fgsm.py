"""Fast Gradient Sign Method (Goodfellow et al. 2015)."""
import torch
from torch import nn

from robustlab.attacks.base import Attack, check_eps, input_gradient


class FGSM(Attack):
    """One step ``x + eps * sign(grad_x CE)``, clipped to [0,1]. DEEPSEC default eps: 0.3 MNIST, 0.1 CIFAR."""

    name = "fgsm"

    def __init__(self, eps: float = 0.3):
        super().__init__()
        self.eps = check_eps(eps)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None) -> torch.Tensor:
        grad, _ = input_gradient(model, x, y)
        return (x + self.eps * grad.sign()).clamp(0, 1)
