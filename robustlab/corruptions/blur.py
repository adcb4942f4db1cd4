"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur."""
import numpy as np
import torch

from robustlab.corruptions import _ops
from robustlab.corruptions._ops import Rng


def _gauss_kernel_cv(size: int, sigma: float) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The ImageNet-C defocus kernel: an aliased disk of ``radius`` (on a grid of at least 17x17),
    normalised and smoothed by a 3x3 (5x5 for radius > 8) Gaussian of std ``alias_blur``."""
    half = 8 if radius <= 8 else int(radius)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    g = _gauss_kernel_cv(3 if radius <= 8 else 5, alias_blur)
    return _ops.filter2d(disk[None, None], g[:, None] * g[None, :], "reflect")[0, 0]


def defocus_blur(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """Convolution with an anti-aliased disk (``c = (radius, alias_blur)``), OpenCV reflect-101 border."""
    return _ops.filter2d_lowrank(x, disk_kernel(*c), "reflect").clamp(0, 1)


def gaussian_blur(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """Gaussian blur of std ``c`` pixels, edges replicated (skimage's default)."""
    return _ops.gaussian_blur(x, c).clamp(0, 1)


def motion_blur(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """Motion blur (``c = (radius, sigma)``) in a direction drawn uniformly in [-45, 45] degrees per image."""
    angle = rng.uniform(low=-45.0, high=45.0)
    return _ops.motion_blur(x, c[0], c[1], angle).clamp(0, 1)


def zoom_blur(x: torch.Tensor, c, rng: Rng, centered_trim: bool = False) -> torch.Tensor:
    """Mean of the image and its centre zooms by the factors ``np.arange(*c)``."""
    h, w = x.shape[-2:]
    factors = np.arange(*c)
    out = x.clone()
    for z in factors:
        mh = _ops.zoom_matrix(h, z, centered_trim, x.device)
        mw = _ops.zoom_matrix(w, z, centered_trim, x.device)
        out += _ops.apply_separable(x, mh, mw)
    return (out / (len(factors) + 1)).clamp(0, 1)


def _local_copies(x: torch.Tensor, delta: int, offsets: torch.Tensor) -> torch.Tensor:
    """The ImageNet-C pixel shuffle as it really behaves on colour images: sweeping rows and columns
    downwards from the far corner, pixel (h, w) takes the value of (h+dy, w+dx) (numpy's tuple swap of
    views copies instead of swapping). Run exactly, but batched: ops with equal ``2*delta*row + col``
    never touch each other's pixels, so each such wavefront is one gather and one scatter.
    ``offsets`` (B, n_h, n_w, 2) are (dy, dx) in [-delta, delta)."""
    b, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(b * h * w, c).clone()
    hs = torch.arange(h - delta, delta, -1, device=x.device)
    ws = torch.arange(w - delta, delta, -1, device=x.device)
    ih, iw = torch.meshgrid(torch.arange(len(hs), device=x.device), torch.arange(len(ws), device=x.device),
                            indexing="ij")
    time = (2 * delta * ih + iw).flatten()
    order = torch.argsort(time, stable=True)
    counts = torch.bincount(time).tolist()
    src_h, src_w = hs[ih.flatten()[order]], ws[iw.flatten()[order]]
    off = offsets.reshape(b, -1, 2)[:, (ih * len(ws) + iw).flatten()[order]]
    base = (torch.arange(b, device=x.device) * h * w)[:, None]
    dst = (base + src_h * w + src_w).T.contiguous()
    src = (base + (src_h[None] + off[..., 0]) * w + (src_w[None] + off[..., 1])).T.contiguous()
    start = 0
    for n in counts:
        s, d = src[start:start + n].flatten(), dst[start:start + n].flatten()
        start += n
        flat.index_copy_(0, d, flat.index_select(0, s))
    return flat.reshape(b, h, w, c).permute(0, 3, 1, 2)


def glass_blur(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """Gaussian blur (std ``c[0]``), quantise to uint8, ``c[2]`` sweeps of local pixel copies within
    ``c[1]`` pixels, Gaussian blur again. Batched: see :func:`_local_copies`."""
    sigma, delta, iterations = c
    h, w = x.shape[-2:]
    y = torch.floor(_ops.gaussian_blur(x, sigma) * 255) / 255
    n_h, n_w = max(h - 2 * delta, 0), max(w - 2 * delta, 0)
    for _ in range(iterations):
        offsets = rng.randint(-delta, delta, n_h, n_w, 2).to(x.device)
        y = _local_copies(y, delta, offsets)
    return _ops.gaussian_blur(y, sigma).clamp(0, 1)

