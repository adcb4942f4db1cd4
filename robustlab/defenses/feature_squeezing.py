"""Feature squeezing (Xu, Evans & Qi 2018): flag inputs whose prediction moves when squeezed."""

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses.detector import Detector, DetectorDefense, plain
from robustlab.errors import RobustlabError


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Reduce [0,1] images to ``bits`` bits per channel: ``round(x * (2^bits - 1)) / (2^bits - 1)``."""
    levels = 2 ** int(bits) - 1
    return torch.round(x * levels) / levels


def median_smoothing(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-channel median over a ``size`` x ``size`` window, as ``scipy.ndimage.median_filter``
    (Xu et al.'s code): symmetric ("reflect") padding of ``size // 2`` before and the rest after,
    and for an even window the upper of the two middle values."""
    before, after = size // 2, size - 1 - size // 2

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        parts = [t.narrow(dim, 0, before).flip(dim), t, t.narrow(dim, n - after, after).flip(dim)]
        return torch.cat(parts, dim)

    padded = pad(pad(x, -2), -1)
    windows = padded.unfold(-2, size, 1).unfold(-2, size, 1).flatten(-2)
    return windows.sort(-1).values[..., (size * size) // 2]


def non_local_means(x: torch.Tensor, search_window: int, patch_size: int, strength: float) -> torch.Tensor:
    """OpenCV's non-local means on 8-bit images, as Xu et al.'s ``non_local_means`` squeezer
    ("11-3-4": search window 11, patch 3, filter strength 4 on the 0-255 scale). Needs ``opencv-python``."""
    try:
        import cv2
    except ImportError:
        raise RobustlabError(
            "the non_local_means squeezer needs OpenCV",
            "pip install opencv-python-headless, or drop squeezers.non_local_means",
        ) from None
    images = (x.detach().permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    out = []
    for img in images:
        if img.shape[-1] == 3:
            out.append(cv2.fastNlMeansDenoisingColored(img, None, strength, strength, patch_size, search_window))
        else:
            out.append(cv2.fastNlMeansDenoising(img[..., 0], None, strength, patch_size, search_window)[..., None])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x) / 255


def _squeezer(name: str, arg) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "bit_depth":
        return lambda x: bit_depth(x, int(arg))
    if name == "median":
        return lambda x: median_smoothing(x, int(arg))
    if name == "non_local_means":
        window, patch, strength = arg
        return lambda x: non_local_means(x, int(window), int(patch), float(strength))
    raise RobustlabError(f"unknown squeezer {name!r}", "use bit_depth, median or non_local_means")


class FeatureSqueezingDetector(Detector):
    """Score ``max_s || softmax(f(x)) - softmax(f(s(x))) ||_1`` over the squeezers ``s`` (Xu et al.
    Sec. 4, the joint detector), flagged above one threshold. ``squeezers`` maps a name to its
    parameter (``null`` skips it): ``bit_depth: bits``, ``median: size``,
    ``non_local_means: [search_window, patch_size, strength]``."""

    def __init__(self, net: nn.Module, squeezers: Mapping[str, int | Sequence | None], fpr: float = 0.05):
        super().__init__(net, 1, fpr)
        self.squeezers = {name: _squeezer(name, arg) for name, arg in squeezers.items() if arg is not None}
        if not self.squeezers:
            raise RobustlabError("feature squeezing got no squeezers", "set defense.squeezers.bit_depth or .median")

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        p = F.softmax(self.net(x), 1)
        dist = [(p - F.softmax(self.net(squeeze(x)), 1)).abs().sum(1) for squeeze in self.squeezers.values()]
        return torch.stack(dist, 1).amax(1, keepdim=True)


class FeatureSqueezing(DetectorDefense):
    """Train the classifier on clean data, then set the squeezing detector's threshold on validation."""

    def __init__(
        self,
        net: nn.Module,
        squeezers: Mapping[str, int | Sequence | None],
        fpr: float = 0.05,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        squeezers, fpr = plain(squeezers), plain(fpr)
        node = {"_target_": f"{__name__}.FeatureSqueezingDetector", "squeezers": squeezers, "fpr": fpr}
        super().__init__(
            net, FeatureSqueezingDetector(net, squeezers, fpr), node, optimizer, scheduler, scheduler_interval
        )
