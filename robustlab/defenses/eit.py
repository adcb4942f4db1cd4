"""EIT: ensemble of input transformations (Guo et al. 2018, "Countering adversarial images using
input transformations"; DEEPSEC's EIT)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses.base import InferenceDefense, PreprocessedClassifier
from robustlab.defenses.transforms import bit_depth, crop_rescale, jpeg, tv_minimise
from robustlab.errors import RobustlabError


class EITTransform(nn.Module):
    """DEEPSEC's chain of Guo et al.'s transformations, fresh randomness on every call:

    1. a random ``crop_size`` crop rescaled (nearest) back to the image size;
    2. TV minimisation with pixel dropout: each pixel kept with ``keep_prob``, then
       :func:`tv_minimise` with ``weight = 2 / lambda_tv`` (``tv_steps`` iterations);
    3. JPEG at ``jpeg_quality``;
    4. bit-depth reduction to ``bits`` bits.

    Non-differentiable (JPEG, rounding): the output is detached."""

    def __init__(
        self,
        crop_size: int = 26,
        lambda_tv: float = 0.03,
        keep_prob: float = 0.5,
        tv_steps: int = 100,
        jpeg_quality: int = 85,
        bits: int = 4,
    ):
        super().__init__()
        if lambda_tv <= 0 or not 0 < keep_prob <= 1:
            raise RobustlabError(
                f"EIT needs lambda_tv > 0 and keep_prob in (0, 1], got {lambda_tv} and {keep_prob}",
                "use DEEPSEC's lambda_tv=0.03 and keep_prob=0.5",
            )
        self.crop_size, self.lambda_tv, self.keep_prob, self.tv_steps = crop_size, lambda_tv, keep_prob, tv_steps
        self.jpeg_quality, self.bits = jpeg_quality, bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop_size > min(x.shape[-2:]):
            raise RobustlabError(
                f"EIT crops {self.crop_size} px from {x.shape[-1]} px images",
                "set defense.crop_size below the image size (26 MNIST, 30 CIFAR-10)",
            )
        with torch.no_grad():
            x = crop_rescale(x.detach(), self.crop_size)
            mask = torch.rand(len(x), 1, *x.shape[-2:], device=x.device) < self.keep_prob
            x = tv_minimise(x, 2 / self.lambda_tv, mask, self.tv_steps).clamp(0, 1)
            return bit_depth(jpeg(x, self.jpeg_quality), self.bits)


class EITClassifier(PreprocessedClassifier):
    """``classifier(preprocess(x))`` with ``preprocess`` an :class:`EITTransform`: random (``randomized``:
    EOT) and non-differentiable (BPDA, straight-through when ``x`` requires a gradient)."""

    randomized = True

    def __init__(self, net: nn.Module, **transform):
        super().__init__(net, EITTransform(**transform))


class EIT(InferenceDefense):
    """Retrain ``net`` on transformed images (a fresh :class:`EITTransform` draw per batch rather than
    DEEPSEC's one transformed copy of the data set) and apply the transform at inference.
    DEEPSEC: crop 26 (MNIST) / 30 (CIFAR-10), lambda_tv 0.03, JPEG quality 85, 4 bits."""

    def __init__(
        self,
        net: nn.Module,
        crop_size: int = 26,
        lambda_tv: float = 0.03,
        keep_prob: float = 0.5,
        tv_steps: int = 100,
        jpeg_quality: int = 85,
        bits: int = 4,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        options = {
            "crop_size": int(crop_size),
            "lambda_tv": float(lambda_tv),
            "keep_prob": float(keep_prob),
            "tv_steps": int(tv_steps),
            "jpeg_quality": int(jpeg_quality),
            "bits": int(bits),
        }
        super().__init__(net, EITClassifier, options, optimizer, scheduler, scheduler_interval)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(self.inference.preprocess(x)), y)
