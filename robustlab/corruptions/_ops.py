"""Batched building blocks shared by the corruption families: randomness, padding, filters, resampling."""

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.rng import Streams

LUMA = (0.299, 0.587, 0.114)


class Rng:
    """Random draws of shape ``(B, *shape)`` from one ``torch.Generator`` for the whole batch (or torch's global
    one), or from per-sample :class:`~robustlab.rng.Streams` (then a sample's draws do not depend on the rest of its
    batch)."""

    def __init__(self, generator, batch: int, device: torch.device):
        self.streams = generator if isinstance(generator, Streams) else None
        if self.streams is not None and len(self.streams) != batch:
            raise ValueError(f"got {len(self.streams)} sample streams for a batch of {batch}")
        self.generator, self.batch, self.device = generator, batch, device

    def _draw(self, fn, shape, dtype=torch.float32):
        g = self.generator
        dev = g.device if g is not None else self.device
        return fn((self.batch, *shape), g, dev, dtype).to(self.device)

    def normal(self, *shape, mean=0.0, std=1.0):
        if self.streams is not None:
            return self.streams.normal(*shape).to(self.device) * std + mean
        return self._draw(lambda s, g, d, t: torch.randn(s, generator=g, device=d, dtype=t), shape) * std + mean

    def uniform(self, *shape, low=0.0, high=1.0):
        if self.streams is not None:
            return self.streams.uniform(*shape).to(self.device) * (high - low) + low
        return self._draw(lambda s, g, d, t: torch.rand(s, generator=g, device=d, dtype=t), shape) * (high - low) + low

    def randint(self, low, high, *shape):
        if self.streams is not None:
            return self.streams.randint(high - low, *shape).to(self.device) + low
        return self._draw(lambda s, g, d, t: torch.randint(low, high, s, generator=g, device=d), shape)

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        if self.streams is not None:
            return poisson_inverse(rates, self.streams.uniform(*rates.shape[1:]).to(rates.device))
        g = self.generator
        dev = g.device if g is not None else rates.device
        return torch.poisson(rates.to(dev), generator=g).to(rates.device)


def poisson_inverse(rates: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Poisson(``rates``) counts by inversion of uniforms ``u``: the smallest ``k`` with ``P(K <= k) > u``, where
    ``P(K <= k) = Q(k + 1, rate)``, the regularised upper incomplete gamma function, found by bisection on ``k``."""
    lam = rates.double()
    lo = torch.zeros_like(lam)
    hi = (lam + 12 * lam.sqrt() + 16).ceil()
    u = u.double()
    while bool((hi > lo).any()):
        mid = ((lo + hi) / 2).floor()
        above = torch.special.gammaincc(mid + 1, lam) > u
        lo, hi = torch.where(above, lo, mid + 1), torch.where(above, mid, hi)
    return lo.to(rates.dtype)


def pad_index(n: int, before: int, after: int, mode: str, device=None) -> torch.Tensor:
    """Source indices for padding a length-``n`` axis: ``replicate`` (scipy nearest), ``symmetric`` (scipy
    reflect, edge repeated), ``reflect`` (OpenCV reflect-101, edge not repeated)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        period = 2 * n
        i = i % period
        return torch.where(i >= n, period - 1 - i, i)
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(i)
        period = 2 * n - 2
        i = i % period
        return torch.where(i >= n, period - i, i)
    raise ValueError(mode)


def pad2d(x: torch.Tensor, ph: tuple[int, int], pw: tuple[int, int], mode: str) -> torch.Tensor:
    """Pad the last two axes by index gathering (works for pads wider than the image)."""
    h, w = x.shape[-2:]
    if max(ph) < h and max(pw) < w:
        if mode in ("replicate", "reflect"):
            return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), mode=mode)
        top, bottom = x[..., : ph[0], :].flip(-2), x[..., h - ph[1] :, :].flip(-2)
        x = torch.cat([top, x, bottom], -2)
        left, right = x[..., : pw[0]].flip(-1), x[..., w - pw[1] :].flip(-1)
        return torch.cat([left, x, right], -1)
    x = x.index_select(-2, pad_index(h, *ph, mode, x.device))
    return x.index_select(-1, pad_index(w, *pw, mode, x.device))


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Correlate every channel of ``x`` (B,C,H,W) with a 2-D ``kernel`` (kh,kw) (or (B,kh,kw)), same size."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape[-2:]
    xp = pad2d(x, (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), mode)
    kernel = kernel.to(x)
    if kernel.dim() == 2:
        return F.conv2d(xp.reshape(b * c, 1, *xp.shape[-2:]), kernel[None, None]).reshape(b, c, h, w)
    weight = kernel[:, None].repeat_interleave(c, 0)
    return F.conv2d(xp.reshape(1, b * c, *xp.shape[-2:]), weight, groups=b * c).reshape(b, c, h, w)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's sampled Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def filter_matrix(n: int, taps: torch.Tensor, mode: str, device=None) -> torch.Tensor:
    """(n, n) operator correlating a length-``n`` axis with the centred 1-D ``taps`` under border ``mode``."""
    k = len(taps)
    src = pad_index(n, k // 2, k - 1 - k // 2, mode, device)
    rows = torch.arange(n, device=device)[:, None].expand(n, k)
    cols = src[torch.arange(n, device=device)[:, None] + torch.arange(k, device=device)[None]]
    m = torch.zeros(n, n, dtype=torch.float64, device=device)
    m.index_put_((rows.reshape(-1), cols.reshape(-1)), taps.double().to(device).repeat(n), accumulate=True)
    return m


def gaussian_blur(x: torch.Tensor, sigma, mode: str = "replicate", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian on (B,C,H,W): separable, ``sigma`` scalar or (sigma_h, sigma_w); applied
    as two (H,H)/(W,W) matrix products, which beats direct convolution for wide kernels on small images."""
    sh, sw = (sigma, sigma) if np.isscalar(sigma) else sigma
    h, w = x.shape[-2:]
    one = torch.ones(1, dtype=torch.float64)
    mh = filter_matrix(h, gaussian_kernel1d(sh, truncate) if sh > 0 else one, mode, x.device)
    mw = filter_matrix(w, gaussian_kernel1d(sw, truncate) if sw > 0 else one, mode, x.device)
    return apply_separable(x, mh, mw)


def filter2d_lowrank(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """:func:`filter2d` through the kernel's SVD: a sum of separable filters, each two matrix products
    (exact up to float rounding; fast for wide kernels)."""
    h, w = x.shape[-2:]
    u, s, vt = torch.linalg.svd(kernel.double())
    out = torch.zeros_like(x)
    for r in range(int((s > s[0] * 1e-9).sum())):
        root = s[r].sqrt()
        out += apply_separable(
            x, filter_matrix(h, u[:, r] * root, mode, x.device), filter_matrix(w, vt[r] * root, mode, x.device)
        )
    return out


def sparse_operator(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int, dtype, device) -> torch.Tensor:
    """(n, n) sparse CSR matrix with the entries ``vals`` at (``rows``, ``cols``), duplicates summed."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals.double(), (n, n), check_invariants=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta")
        return coo.coalesce().to(dtype).to_sparse_csr().to(device)


def kron_operator(terms, dtype=torch.float32, device=None) -> torch.Tensor:
    """Sparse (H*W, H*W) operator of ``X -> sum_r A_r @ X @ B_r.T`` on flattened images, for ``terms``
    a sequence of dense (A_r (H,H), B_r (W,W)) pairs."""
    h, w = terms[0][0].shape[0], terms[0][1].shape[0]
    rows, cols, vals = [], [], []
    for a, b in terms:
        ai, aj = a.nonzero(as_tuple=True)
        bi, bj = b.nonzero(as_tuple=True)
        rows.append((ai[:, None] * w + bi[None]).flatten())
        cols.append((aj[:, None] * w + bj[None]).flatten())
        vals.append((a[ai, aj].double()[:, None] * b[bi, bj].double()[None]).flatten())
    return sparse_operator(torch.cat(rows), torch.cat(cols), torch.cat(vals), h * w, dtype, device)


def conv_operator(kernel: torch.Tensor, h: int, w: int, mode: str, dtype=torch.float32, device=None) -> torch.Tensor:
    """Sparse (H*W, H*W) operator of :func:`filter2d` with a 2-D ``kernel`` under border ``mode``."""
    kh, kw = kernel.shape
    ti, tj = kernel.nonzero(as_tuple=True)
    src_h = pad_index(h, kh // 2, kh - 1 - kh // 2, mode)[torch.arange(h)[:, None] + ti[None]]  # (H, taps)
    src_w = pad_index(w, kw // 2, kw - 1 - kw // 2, mode)[torch.arange(w)[:, None] + tj[None]]  # (W, taps)
    rows = torch.arange(h * w)[:, None].expand(-1, len(ti))
    cols = (src_h[:, None] * w + src_w[None]).reshape(h * w, -1)
    vals = kernel[ti, tj].double()[None].expand(h * w, -1)
    return sparse_operator(rows.flatten(), cols.flatten(), vals.flatten(), h * w, dtype, device)


def apply_operator(x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """A sparse (H*W, H*W) operator applied to every channel of (B,C,H,W) images."""
    b, c, h, w = x.shape
    return (op @ x.reshape(b * c, h * w).T).T.reshape(b, c, h, w)


def filter2d_fast(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """:func:`filter2d` by the cheaper exact route: a cached sparse (H*W, H*W) operator when the kernel has
    few taps for its rank (taps below 1e-12 of the largest dropped), else :func:`filter2d_lowrank`."""
    h, w = x.shape[-2:]
    kernel = kernel.double().cpu()
    taps = torch.where(kernel.abs() > kernel.abs().max() * 1e-12, kernel, 0.0)
    nnz = int((taps != 0).sum())
    s = torch.linalg.svdvals(kernel)
    if nnz > 40 * int((s > s[0] * 1e-9).sum()) or nnz * h * w > 2**22:
        return filter2d_lowrank(x, kernel, mode)
    key = tuple(map(tuple, taps.tolist()))
    return apply_operator(x, _cached_conv_operator(key, h, w, mode, x.dtype, x.device))


@lru_cache(maxsize=32)
def _cached_conv_operator(taps: tuple, h: int, w: int, mode: str, dtype, device) -> torch.Tensor:
    return conv_operator(torch.tensor(taps, dtype=torch.float64), h, w, mode, dtype, device)


def interp_matrix(coords: torch.Tensor, n: int) -> torch.Tensor:
    """(len(coords), n) linear-interpolation weights sampling a length-``n`` axis at ``coords``
    (clamped to the axis)."""
    coords = coords.clamp(0, n - 1)
    lo = coords.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = coords - lo
    m = torch.zeros(len(coords), n, dtype=coords.dtype, device=coords.device)
    rows = torch.arange(len(coords), device=coords.device)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m


def zoom_matrix(n: int, factor: float, centered_trim: bool, device=None) -> torch.Tensor:
    """(n, n) operator of the ImageNet-C ``clipped_zoom`` along one axis: crop ``ceil(n/factor)``
    centred pixels, scipy-zoom them (order 1, corners aligned) by ``factor``, keep ``n`` outputs
    (the first ``n``, or the centred ``n`` with ``centered_trim`` as in the CIFAR code)."""
    crop = int(math.ceil(n / float(factor)))
    top = (n - crop) // 2
    out = int(round(crop * factor))
    start = (out - n) // 2 if centered_trim else 0
    o = torch.arange(start, start + n, dtype=torch.float64, device=device)
    scale = (crop - 1) / (out - 1) if out > 1 else 0.0
    m = torch.zeros(n, n, dtype=torch.float64, device=device)
    m[:, top : top + crop] = interp_matrix(o * scale, crop)
    return m


def apply_separable(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """``mh @ x @ mw.T`` on the last two axes."""
    return torch.matmul(torch.matmul(mh.to(x), x), mw.to(x).transpose(-1, -2))


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """ImageMagick-style motion blur, one angle (degrees) per image: a one-sided Gaussian of
    ``2*radius+1`` taps along the direction, edge pixels replicated; taps beyond the image are dropped.
    Every tap is an integer shift per image. Images are sorted by angle, so neighbours mostly share a
    shift, and taken in cache-sized chunks: each run of equal shifts in a chunk is one slice-add from the
    chunk padded by replication."""
    b, c, h, w = x.shape
    width = int(2 * math.ceil(radius) + 1)
    taps = torch.exp(-(torch.arange(width, dtype=torch.float64) ** 2) / (2 * sigma**2))
    taps = (taps / taps.sum()).tolist()
    rad = torch.deg2rad(angle.detach().double().cpu())
    i = torch.arange(width, dtype=torch.float64)
    order = torch.argsort(rad)
    dy = -torch.ceil(i * torch.sin(rad[order])[:, None] - 0.5).long()
    dx = -torch.ceil(i * torch.cos(rad[order])[:, None] - 0.5).long()
    alive = ((dy.abs() < h) & (dx.abs() < w)).cummin(1).values
    dy, dx = dy * alive, dx * alive
    key = torch.where(alive, (dy + h) * (2 * w + 1) + dx + w, -1)
    xs = x[order.to(x.device)]
    out = torch.zeros_like(xs)
    chunk = max(1, 2**18 // (c * h * w))  # about 1 MB of float32 per chunk
    for a0 in range(0, b, chunk):
        cy, cx, ck = dy[a0 : a0 + chunk], dx[a0 : a0 + chunk], key[a0 : a0 + chunk]
        top, left = max(0, int(cy.max())), max(0, int(cx.max()))
        xp = pad2d(xs[a0 : a0 + chunk], (top, max(0, -int(cy.min()))), (left, max(0, -int(cx.min()))), "replicate")
        start = torch.ones_like(ck, dtype=torch.bool)
        start[1:] = ck[1:] != ck[:-1]
        tap, first = start.T.nonzero().unbind(1)
        last = torch.cat([torch.where(tap[1:] == tap[:-1], first[1:], len(ck)), torch.tensor([len(ck)])])
        runs = torch.stack([first, last, top - cy[first, tap], left - cx[first, tap], tap], 1)[ck[first, tap] >= 0]
        o = out[a0 : a0 + chunk]
        for s, e, sy, sx, t in runs.tolist():
            o[s:e].add_(xp[s:e, :, sy : sy + h, sx : sx + w], alpha=taps[t])
    return out[torch.argsort(order).to(x.device)]


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) luma (ITU-R 601) of RGB, or the image itself when it has one channel."""
    if x.shape[1] == 1:
        return x
    return (x[:, :1] * LUMA[0]).add_(x[:, 1:2], alpha=LUMA[1]).add_(x[:, 2:], alpha=LUMA[2])
