"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt & pepper) and speckle."""

import math
from functools import lru_cache

import torch

from robustlab.corruptions._ops import Rng

LEVELS = 255  # the 8-bit grid on which shot noise uses its inversion tables
GUIDE = 1024  # guide-table cells per level: a power of two, so the cell index is exact in float32; 1 MB


def gaussian_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """``x + N(0, c^2)`` per pixel and channel."""
    return (x + rng.normal(*x.shape[1:], std=c)).clamp(0, 1)


def shot_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """``Poisson(c * x) / c``: photon noise with ``c`` photons at full intensity. Pixel values on the 8-bit
    grid ``k / 255`` (images loaded from uint8) are drawn by inversion from cached per-level tables, one
    float32 uniform each (so every probability is exact up to the uniform's 2^-24 resolution), several times
    faster than ``torch.poisson``; other values by ``torch.poisson``."""
    u = rng.uniform(*x.shape[1:]).flatten()
    level = torch.round(x * LEVELS)
    cdf, guide, k_max = _poisson_tables(float(c), x.device)
    pos = guide[(level.flatten() * GUIDE + torch.floor(u * GUIDE)).long()]
    open_cells = torch.nonzero(pos < 0).flatten()
    if open_cells.numel():
        start = -1 - pos[open_cells]
        u_open = u[open_cells].double()
        todo = torch.arange(len(open_cells), device=x.device)
        while todo.numel():
            todo = todo[cdf[start[todo]] <= u_open[todo]]
            start[todo] += 1
        pos[open_cells] = start
    counts = pos.view(x.shape).to(x) - level * k_max
    on_grid = level / LEVELS == x
    if not on_grid.all():
        counts = torch.where(on_grid, counts, rng.poisson(x * c))
    return (counts / c).clamp(0, 1)


@lru_cache(maxsize=32)
def _poisson_tables(c: float, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inversion tables for Poisson(``c * q / 255``), q = 0..255. ``cdf``: the CDFs flattened (256 * k_max;
    the tail beyond ``k_max``, below 1e-20, folded into the last entry). ``guide`` (256 * GUIDE): for level q
    and cell ``[j, j + 1) / GUIDE`` of u, the flat position of the first count whose CDF exceeds ``j / GUIDE``,
    stored as ``-1 - position`` when another count's CDF falls inside the cell (then the CDF is searched)."""
    k_max = int(c + 10 * math.sqrt(c) + 30)
    lam = torch.arange(LEVELS + 1, dtype=torch.float64)[:, None] * (c / LEVELS)
    k = torch.arange(k_max, dtype=torch.float64)
    cdf = torch.exp(torch.special.xlogy(k, lam) - lam - torch.lgamma(k + 1)).cumsum(1)
    cdf[:, -1] = 1.0
    cells = (torch.arange(GUIDE, dtype=torch.float64) / GUIDE).expand(LEVELS + 1, -1).contiguous()
    first = torch.searchsorted(cdf, cells, right=True)
    decided = cdf.gather(1, first) >= cells + 1 / GUIDE
    pos = first + torch.arange(LEVELS + 1)[:, None] * k_max
    guide = torch.where(decided, pos, -1 - pos).to(torch.int32)
    return cdf.flatten().to(device), guide.flatten().to(device), k_max


def impulse_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """Salt and pepper: each pixel and channel is replaced with probability ``c``, half by 0, half by 1 (one
    uniform ``u`` decides both: replaced if ``u <= c``, by 1 if ``u <= c / 2``)."""
    u = rng.uniform(*x.shape[1:])
    return torch.where(u <= c, (u <= c / 2).to(x), x)


def speckle_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, c^2)``."""
    return (x + x * rng.normal(*x.shape[1:], std=c)).clamp(0, 1)
