"""The attack interface: ``attack(model, x, y) -> x_adv`` on [0,1] images."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import RobustlabError

NORMS = ("linf", "l2")


def check_images(x: torch.Tensor, who: str) -> None:
    """Raise a one-line error unless ``x`` is a finite float batch in [0,1]."""
    if not torch.is_floating_point(x):
        raise RobustlabError(f"{who} got {x.dtype} images", "pass float images in [0,1]")
    if not torch.isfinite(x).all():
        raise RobustlabError(f"{who} got images containing NaN or inf", "clean the input batch before attacking it")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise RobustlabError(f"{who} got images outside [0,1] (min {lo:.3g}, max {hi:.3g})",
                             "feed unnormalised [0,1] images and put normalisation inside the model")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise RobustlabError(f"unknown norm {norm!r}", f"use one of {', '.join(NORMS)}")
    return norm


def check_eps(eps: float, name: str = "eps") -> float:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise RobustlabError(f"{name} must be a finite number >= 0, got {eps!r}", f"set a non-negative {name}")
    return float(eps)


def random_like(x: torch.Tensor, seeds: torch.Tensor | None, kind: str = "uniform") -> torch.Tensor:
    """Uniform [0,1) or standard normal noise shaped like ``x``.

    With ``seeds`` (one integer per example) each example's noise depends only on its seed, so
    results do not change with batch size, order, process count or device.
    """
    draw = torch.rand if kind == "uniform" else torch.randn
    if seeds is None:
        return draw(x.shape, device=x.device, dtype=x.dtype)
    gen = torch.Generator()
    noise = [draw(x.shape[1:], generator=gen.manual_seed(int(s))) for s in seeds.tolist()]
    return torch.stack(noise).to(device=x.device, dtype=x.dtype)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed cross-entropy w.r.t. ``x`` only (parameter grads untouched), and the logits."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return grad, logits.detach()


def lp_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of a batch, shape ``(B,)``."""
    flat = v.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


class Attack:
    """Base class. Subclasses implement :meth:`perturb`; ``__call__`` adds the checks.

    After a call, ``last_success`` is a boolean per example: True where the returned image is
    misclassified (``perturb`` may set it; otherwise one forward pass computes it). Attacks never change the model's train/eval mode or its parameter gradients.
    """

    name = "attack"
    #: "whitebox" (uses gradients) or "blackbox"; decides the report key of later metrics.
    kind = "whitebox"

    def __init__(self):
        self.last_success: torch.Tensor | None = None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """Attack a batch of [0,1] images ``x`` with labels ``y``; returns detached ``x_adv``.

        ``seeds`` (optional, one int per example) makes random starts reproducible per example.
        """
        if torch.is_inference_mode_enabled():
            raise RobustlabError(f"{type(self).__name__} was called under torch.inference_mode(), where gradients "
                                 "cannot be computed", "use Trainer(inference_mode=False) or call it outside inference mode")
        check_images(x, type(self).__name__)
        y = y.to(x.device)
        self.last_success = None
        with torch.enable_grad():
            x_adv = self.perturb(model, x.detach(), y, seeds).detach()
        if self.last_success is None:
            with torch.no_grad():
                self.last_success = model(x_adv).argmax(1) != y
        return x_adv

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("last_"))
        return f"{type(self).__name__}({args})"
