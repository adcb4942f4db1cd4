"""Frost textures: procedural (the default) or the six frost photos of the reference package.

Procedural textures are robustlab's own: a diamond-square cloud plus ice needles (sparse seeds smeared
by motion blurs in three random directions, the brightest kept), standardised per image and mapped to
the colour statistics of the reference photos (measured on 200 random crops of each photo: channel means
0.53/0.62/0.67, image-to-image brightness spread 0.21/0.16/0.16, within-image std 0.09). They need no
files and are identical on every machine. They are not photographs: the fine crystal structure differs,
the first and second moments of the texture (what frost's error statistics depend on) match.

``textures="reference"`` crops the ``imagecorruptions`` photos instead (resized as the reference does:
by 0.2 for ``params="cifar"``; to 1.1x the image for ``params="imagenet"``), when that package is installed.
"""

import math
from functools import cache, lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.corruptions import _ops
from robustlab.corruptions._ops import Rng
from robustlab.errors import RobustlabError

MEAN = (0.53, 0.62, 0.67)
BETWEEN_STD = (0.21, 0.16, 0.16)
WITHIN_STD = 0.105
PHOTOS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


def plasma_fractal(batch: int, size: int, decay: float, rng: Rng, device=None) -> torch.Tensor:
    """(B, size, size) diamond-square height maps in [0, 1] (``size`` a power of two, wrap-around),
    the ImageNet-C fog generator, batched."""
    m = torch.zeros(batch, size, size, device=device)
    step, wibble = size, 100.0

    def noisy_mean(total):
        return rng.uniform(*total.shape[1:], low=-wibble, high=wibble).to(m).mul_(wibble).add_(total, alpha=0.25)

    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        m[:, half::step, half::step] = noisy_mean(square)
        centres, corners = m[:, half::step, half::step], m[:, ::step, ::step]
        m[:, ::step, half::step] = noisy_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, ::step] = noisy_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    flat = m.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    return (m - lo[:, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None]


def next_pow2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()


def procedural(batch: int, channels: int, h: int, w: int, rng: Rng, device=None) -> torch.Tensor:
    """(B, C, H, W) procedural frost textures in [0, 1] (see the module docstring)."""
    size = next_pow2(max(h, w))
    cloud = plasma_fractal(batch, size, 2.0, rng, device)[:, None, :h, :w]
    seeds = (rng.uniform(1, h, w) < 0.04).float().to(device)
    length = max(2.0, 0.08 * max(h, w))
    needles = torch.stack(
        [_ops.motion_blur(seeds, length, length / 2, rng.uniform(low=0.0, high=360.0)) for _ in range(3)]
    ).amax(0)
    pattern = cloud + 2.0 * needles / needles.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]
    pattern = pattern - pattern.mean((2, 3), keepdim=True)
    pattern = pattern / pattern.std((2, 3), keepdim=True).clamp_min(1e-6)
    shift = rng.normal(1, 1, 1).clamp(-2.5, 2.5).to(device)
    mean = torch.tensor(MEAN, device=device)[None, :, None, None]
    between = torch.tensor(BETWEEN_STD, device=device)[None, :, None, None]
    tex = (mean + between * shift + WITHIN_STD * pattern).clamp(0, 1)
    return _ops.gray(tex) if channels == 1 else tex


@cache
def _photo(name: str) -> torch.Tensor:
    try:
        import imagecorruptions
    except ImportError:
        raise RobustlabError(
            "frost textures='reference' needs the imagecorruptions photos",
            "pip install imagecorruptions-imaug, or use textures='procedural'",
        ) from None
    from PIL import Image

    path = f"{imagecorruptions.__path__[0]}/frost/{name}"
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255


@lru_cache(maxsize=32)
def _resized(name: str, scale: float) -> torch.Tensor:
    img = _photo(name)
    size = (int(math.ceil(img.shape[1] * scale)), int(math.ceil(img.shape[2] * scale)))
    return F.interpolate(img[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def reference(batch: int, channels: int, h: int, w: int, rng: Rng, cifar: bool, device=None) -> torch.Tensor:
    """(B, C, H, W) random crops of the reference package's frost photos, resized as it does."""
    n_photos = 5 if cifar else 6
    picks = rng.randint(0, n_photos, 1)[:, 0].tolist()
    corners = rng.uniform(2)
    out = []
    for b, k in enumerate(picks):
        ph, pw = _photo(PHOTOS[k]).shape[1:]
        scale = max(0.2, 1.1 * h / ph, 1.1 * w / pw) if cifar else 1.1 * max(1.0, h / ph, w / pw)
        photo = _resized(PHOTOS[k], round(scale, 6))
        top = int(corners[b, 0] * (photo.shape[1] - h))
        left = int(corners[b, 1] * (photo.shape[2] - w))
        out.append(photo[:, top : top + h, left : left + w])
    tex = torch.stack(out).to(device)
    return _ops.gray(tex) if channels == 1 else tex
