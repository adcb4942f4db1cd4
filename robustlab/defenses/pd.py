"""PixelDefend (Song et al. 2018, "PixelDefend: leveraging generative models to understand and defend
against adversarial examples"; DEEPSEC's PD): purify the input towards high PixelCNN likelihood
within an L-inf ball of radius ``eps_defend``, then classify."""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses.base import InferenceDefense, PreprocessedClassifier
from robustlab.errors import RobustlabError
from robustlab.models.pixelcnn import LEVELS, PixelCNN, quantise


class Purifier(nn.Module):
    """PixelDefend's greedy purification (Alg. 1): for every sub-pixel in raster order, channels in
    order, set it to the level the PixelCNN finds most probable given the already purified
    sub-pixels, among the levels within ``eps_defend`` of the input's own 8-bit level
    ``round(255 x)`` (``floor(255 eps_defend)`` levels either side, clipped to 0..255; ties go to
    the lowest level). The result lies on the 8-bit grid within ``eps_defend`` of ``round(255 x) /
    255``; with ``eps_defend = 0`` it is that quantised input.

    ``H * W * C`` sequential PixelCNN passes per batch, each on the crop the output at the current
    pixel depends on (``pixelcnn.reach`` rows up and columns either side). Deterministic, detached."""

    def __init__(self, pixelcnn: nn.Module, eps_defend: float = 0.3):
        super().__init__()
        if not 0 <= eps_defend <= 1:
            raise RobustlabError(
                f"PixelDefend needs eps_defend in [0, 1], got {eps_defend}",
                "use 0.3 (MNIST) or 16/255 (CIFAR-10), as DEEPSEC",
            )
        self.pixelcnn, self.eps_defend = pixelcnn, float(eps_defend)
        self.radius = int(math.floor(eps_defend * (LEVELS - 1) + 1e-6))

    def logits_at(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The PixelCNN's logits ``(B, 256, C)`` at pixel ``(i, j)`` of ``x``, from the crop it depends on."""
        reach = self.pixelcnn.reach
        top, left = max(0, i - reach), max(0, j - reach)
        return self.pixelcnn(x[:, :, top : i + 1, left : j + reach + 1])[:, :, :, i - top, j - left]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            levels = quantise(x.detach())
            lo, hi = (levels - self.radius).clamp_min(0), (levels + self.radius).clamp_max(LEVELS - 1)
            out = levels.to(x.dtype) / (LEVELS - 1)
            grid = torch.arange(LEVELS, device=x.device)
            _, channels, height, width = x.shape
            for i in range(height):
                for j in range(width):
                    for c in range(channels):
                        logits = self.logits_at(out, i, j)[:, :, c]
                        allowed = (grid >= lo[:, c, i, j, None]) & (grid <= hi[:, c, i, j, None])
                        best = logits.masked_fill(~allowed, float("-inf")).argmax(1)
                        out[:, c, i, j] = best.to(x.dtype) / (LEVELS - 1)
            return out


class PixelDefendClassifier(PreprocessedClassifier):
    """``classifier(preprocess(x))`` with ``preprocess`` a :class:`Purifier` around a :class:`PixelCNN`
    (``in_channels``, ``hidden``, ``blocks``). Deterministic but not differentiable (BPDA,
    straight-through when ``x`` requires a gradient)."""

    def __init__(
        self, net: nn.Module, eps_defend: float = 0.3, in_channels: int = 1, hidden: int = 64, blocks: int = 4
    ):
        super().__init__(net, Purifier(PixelCNN(in_channels, hidden, blocks), eps_defend))

    @property
    def pixelcnn(self) -> PixelCNN:
        return self.preprocess.pixelcnn


class PixelDefend(InferenceDefense):
    """Train the classifier on clean images (cross-entropy) and, in the same steps, the PixelCNN by
    maximum likelihood (NLL in bits per sub-pixel, logged as ``train/bpd`` and ``val/bpd``) with its
    own learning rate ``pixelcnn_lr`` (default: the optimiser's); the loss is their sum. Inference
    purifies with :class:`Purifier` before classifying (:class:`PixelDefendClassifier`).

    During training ``val/acc`` is the plain classifier's (purifying costs ``H * W * C`` PixelCNN
    passes per batch); after training (:meth:`after_fit`) forward and ``test/acc`` purify.
    Song et al. use PixelCNN++ and eps_defend 16/255 on CIFAR-10; DEEPSEC 0.3 on MNIST."""

    def __init__(
        self,
        net: nn.Module,
        eps_defend: float = 0.3,
        hidden: int = 64,
        blocks: int = 4,
        pixelcnn_lr: float | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        in_channels = getattr(net, "in_channels", None)
        if in_channels is None:
            raise RobustlabError(
                f"PixelDefend needs a robustlab model with in_channels, got {type(net).__name__}",
                "use a model from robustlab.models",
            )
        if pixelcnn_lr is not None and pixelcnn_lr <= 0:
            raise RobustlabError(
                f"PixelDefend needs pixelcnn_lr > 0, got {pixelcnn_lr}",
                "use e.g. 0.001, or null for the optimiser's rate",
            )
        options = {
            "eps_defend": float(eps_defend),
            "in_channels": int(in_channels),
            "hidden": int(hidden),
            "blocks": int(blocks),
        }
        super().__init__(net, PixelDefendClassifier, options, optimizer, scheduler, scheduler_interval)
        self.pixelcnn_lr = pixelcnn_lr
        self.purifying = False

    @property
    def pixelcnn(self) -> PixelCNN:
        return self.inference.pixelcnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inference(x) if self.purifying else self.model(x)

    def after_fit(self, datamodule) -> bool:
        """Switch forward (and so testing) to the purifying classifier."""
        self.purifying = True
        return True

    def own_lr_group(self) -> tuple[nn.Module, float] | None:
        return None if self.pixelcnn_lr is None else (self.pixelcnn, self.pixelcnn_lr)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bpd = self.pixelcnn.nll(x)
        self.log("train/bpd", bpd, prog_bar=True)
        return F.cross_entropy(self.model(x), y) + bpd

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        with torch.no_grad():
            self.log("val/bpd", self.pixelcnn.nll(batch[0]), sync_dist=True)
        return out
