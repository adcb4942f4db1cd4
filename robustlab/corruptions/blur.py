"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur."""

from functools import lru_cache

import numpy as np
import torch

from robustlab.corruptions import _ops
from robustlab.corruptions._ops import Rng


def _gauss_kernel_cv(size: int, sigma: float) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The ImageNet-C defocus kernel: an aliased disk of ``radius`` (on a grid of at least 17x17),
    normalised and smoothed by a 3x3 (5x5 for radius > 8) Gaussian of std ``alias_blur``."""
    half = 8 if radius <= 8 else int(radius)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    g = _gauss_kernel_cv(3 if radius <= 8 else 5, alias_blur)
    return _ops.filter2d(disk[None, None], g[:, None] * g[None, :], "reflect")[0, 0]


def defocus_blur(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """Convolution with an anti-aliased disk (``c = (radius, alias_blur)``), OpenCV reflect-101 border."""
    return _ops.filter2d_fast(x, disk_kernel(*c), "reflect").clamp(0, 1)


def gaussian_blur(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """Gaussian blur of std ``c`` pixels, edges replicated (skimage's default)."""
    return _ops.gaussian_blur(x, c).clamp(0, 1)


def motion_blur(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """Motion blur (``c = (radius, sigma)``) in a direction drawn uniformly in [-45, 45] degrees per image."""
    angle = rng.uniform(low=-45.0, high=45.0)
    return _ops.motion_blur(x, c[0], c[1], angle).clamp(0, 1)


@lru_cache(maxsize=16)
def _zoom_operator(h: int, w: int, c: tuple, centered_trim: bool, dtype, device) -> torch.Tensor:
    factors = np.arange(*c)
    terms = [(torch.eye(h, dtype=torch.float64), torch.eye(w, dtype=torch.float64))]
    terms += [(_ops.zoom_matrix(h, z, centered_trim), _ops.zoom_matrix(w, z, centered_trim)) for z in factors]
    terms = [(a / len(terms), b) for a, b in terms]
    return _ops.kron_operator(terms, dtype, device)


def zoom_blur(x: torch.Tensor, c, rng: Rng, centered_trim: bool = False) -> torch.Tensor:
    """Mean of the image and its centre zooms by the factors ``np.arange(*c)``: one cached sparse operator
    (each output pixel mixes a few neighbours per zoom)."""
    h, w = x.shape[-2:]
    return _ops.apply_operator(x, _zoom_operator(h, w, tuple(c), centered_trim, x.dtype, x.device)).clamp(0, 1)


def _local_copies(x: torch.Tensor, delta: int, offsets: torch.Tensor) -> torch.Tensor:
    """The ImageNet-C pixel shuffle as it really behaves on colour images: sweeping rows and columns
    downwards from the far corner, pixel (h, w) takes the value of (h+dy, w+dx) (numpy's tuple swap of
    views copies instead of swapping). ``offsets`` (B, n_h, n_w, 2) are (dy, dx) in [-delta, delta), in
    sweep order. Run exactly, but batched and without the sweep: a pixel's source, if the sweep overwrote it
    earlier (a source below, or to the right in the same row, inside the swept area), passes on its own
    source's value, and so on; these chains are followed for all pixels at once by pointer doubling (a few
    gathers, log2 of the longest chain)."""
    b, c, h, w = x.shape
    lo, hi_h, hi_w = delta + 1, h - delta, w - delta
    dy, dx = offsets.flip(1, 2).unbind(-1)
    rows = dy + torch.arange(lo, hi_h + 1, device=x.device)[:, None]
    cols = dx + torch.arange(lo, hi_w + 1, device=x.device)
    base = torch.arange(b, device=x.device)[:, None, None] * (h * w)
    jump = torch.arange(b * h * w, device=x.device).view(b, h, w)
    jump[:, lo : hi_h + 1, lo : hi_w + 1] = base + rows * w + cols
    done = torch.ones(b, h, w, dtype=torch.bool, device=x.device)
    done[:, lo : hi_h + 1, lo : hi_w + 1] = ~(
        ((dy > 0) | ((dy == 0) & (dx > 0))) & (rows <= hi_h) & (cols >= lo) & (cols <= hi_w)
    )
    jump, done = jump.flatten(), done.flatten()
    todo = torch.nonzero(~done).flatten()
    while todo.numel():
        nxt = jump[todo]
        jump[todo], finished = jump[nxt], done[nxt]
        done[todo] = finished
        todo = todo[~finished]
    jump = jump.view(b, h * w) - base[:, 0]
    return x.reshape(b, c, h * w).gather(2, jump[:, None].expand(b, c, -1)).view(b, c, h, w)


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
