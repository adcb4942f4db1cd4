"""MagNet (Meng & Chen 2017): autoencoder detectors plus an autoencoder reformer."""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.base import random_like
from robustlab.defenses.detector import Detector, DetectorDefense, plain
from robustlab.errors import RobustlabError

#: MagNet Table 1 autoencoders: (kind, output channels) per layer; every conv is 3x3 with a sigmoid.
ARCHITECTURES = {
    "mnist_i": [("conv", 3), ("avgpool", 0), ("conv", 3), ("conv", 3), ("upsample", 0), ("conv", 3), ("conv", 0)],
    "mnist_ii": [("conv", 3), ("conv", 3), ("conv", 0)],
    "cifar": [("conv", 3), ("conv", 3), ("conv", 0)],
}


def autoencoder(architecture: str, in_channels: int) -> nn.Sequential:
    """A MagNet autoencoder; the last conv (width 0 in :data:`ARCHITECTURES`) outputs ``in_channels``."""
    if architecture not in ARCHITECTURES:
        raise RobustlabError(f"unknown MagNet autoencoder {architecture!r}", f"use one of {', '.join(ARCHITECTURES)}")
    layers, channels = [], in_channels
    for kind, width in ARCHITECTURES[architecture]:
        if kind == "conv":
            width = width or in_channels
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.Sigmoid()]
            channels = width
        elif kind == "avgpool":
            layers.append(nn.AvgPool2d(2))
        else:
            layers.append(nn.Upsample(scale_factor=2))
    return nn.Sequential(*layers)


def reconstruction_error(x: torch.Tensor, reconstruction: torch.Tensor, p: int) -> torch.Tensor:
    """MagNet's detector score ``mean_pixels |x - ae(x)|^p`` per example (Sec. 3.1, Eq. 1 up to the
    mean over pixels, as the reference code)."""
    return (x - reconstruction).abs().pow(p).flatten(1).mean(1)


def jensen_shannon(logits_p: torch.Tensor, logits_q: torch.Tensor, temperature: float) -> torch.Tensor:
    """MagNet's probability-divergence score (Sec. 3.1.2): ``JSD(softmax(l_p / T) || softmax(l_q / T))``
    with natural logarithms, per example."""
    p, q = F.softmax(logits_p / temperature, 1), F.softmax(logits_q / temperature, 1)
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a.clamp_min(1e-30).log() - m.clamp_min(1e-30).log()), 0).sum(1)

    return (kl(p) + kl(q)) / 2


class MagNetDetector(Detector):
    """MagNet's inference: ``forward(x) = f(reformer(x))``; ``detect`` flags ``x`` when any detector
    score passes its threshold. ``autoencoders`` lists one MagNet architecture per autoencoder;
    ``detectors`` lists ``[autoencoder index, "l1" | "l2"]`` (reconstruction error with that p) or
    ``[autoencoder index, "jsd", T]`` (divergence of the classifier on x and on ae(x) at temperature T);
    ``reformer`` is the index of the autoencoder used as reformer."""

    def __init__(
        self,
        net: nn.Module,
        autoencoders: Sequence[str],
        detectors: Sequence[Sequence],
        reformer: int = 0,
        in_channels: int = 1,
        fpr: float | Sequence[float] = 0.05,
    ):
        super().__init__(net, len(detectors), fpr)
        self.autoencoders = nn.ModuleList(autoencoder(a, in_channels) for a in autoencoders)
        self.detectors = [list(d) for d in detectors]
        for d in [*self.detectors, [reformer, "l1"]]:
            if (
                not (0 <= int(d[0]) < len(self.autoencoders))
                or d[1] not in ("l1", "l2", "jsd")
                or (d[1] == "jsd") != (len(d) == 3)
            ):
                raise RobustlabError(
                    f"bad MagNet detector {d!r}", 'use [ae index, "l1" | "l2"] or [ae index, "jsd", T]'
                )
        self.reformer = int(reformer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.autoencoders[self.reformer](x))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        out, logits = [], None
        for index, kind, *temperature in self.detectors:
            rec = self.autoencoders[int(index)](x)
            if kind == "jsd":
                logits = self.net(x) if logits is None else logits
                out.append(jensen_shannon(logits, self.net(rec), float(temperature[0])))
            else:
                out.append(reconstruction_error(x, rec, 1 if kind == "l1" else 2))
        return torch.stack(out, 1)


class MagNet(DetectorDefense):
    """Train the classifier on clean data and, in the same steps, each autoencoder to reconstruct
    clean images from noisy ones (``x + noise * N(0, I)`` clipped to [0,1], MSE, as MagNet's code)
    with its own learning rate ``ae_lr`` (MagNet: Adam 1e-3 for 100-400 epochs; a higher rate fits
    the autoencoders into the classifier's few epochs); then set the detector thresholds on
    validation. See :class:`MagNetDetector` for the options."""

    def __init__(
        self,
        net: nn.Module,
        autoencoders: Sequence[str],
        detectors: Sequence[Sequence],
        reformer: int = 0,
        noise: float = 0.1,
        ae_lr: float | None = None,
        fpr: float | Sequence[float] = 0.05,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        in_channels = getattr(net, "in_channels", None)
        if in_channels is None:
            raise RobustlabError(
                f"MagNet needs a robustlab model with in_channels, got {type(net).__name__}",
                "use a model from robustlab.models",
            )
        autoencoders, detectors, fpr = plain(autoencoders), plain(detectors), plain(fpr)
        node = {
            "_target_": f"{__name__}.MagNetDetector",
            "autoencoders": autoencoders,
            "detectors": detectors,
            "reformer": reformer,
            "in_channels": in_channels,
            "fpr": fpr,
        }
        inference = MagNetDetector(net, autoencoders, detectors, reformer, in_channels, fpr)
        super().__init__(net, inference, node, optimizer, scheduler, scheduler_interval)
        self.noise, self.ae_lr = noise, ae_lr

    def own_lr_group(self) -> tuple[nn.Module, float] | None:
        return None if self.ae_lr is None else (self.inference.autoencoders, self.ae_lr)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(self.model(x), y)
        noisy = (x + self.noise * random_like(x, None, "normal")).clamp(0, 1)
        mse = torch.stack([F.mse_loss(ae(noisy), x) for ae in self.inference.autoencoders]).sum()
        self.log("train/reconstruction_mse", mse)
        return ce + mse
