"""Weather corruptions: snow, frost, fog and (held-out) spatter."""

import torch
import torch.nn.functional as F

from robustlab.corruptions import _ops
from robustlab.corruptions import frost as _frost
from robustlab.corruptions._ops import Rng

WATER = (175 / 255, 238 / 255, 238 / 255)
MUD = (63 / 255, 42 / 255, 20 / 255)


def _colour(rgb, x: torch.Tensor) -> torch.Tensor:
    """(1, C, 1, 1) colour for ``x``: the RGB triple, or its luma for grayscale images."""
    c = torch.tensor(rgb, dtype=x.dtype, device=x.device)[None, :, None, None]
    return _ops.gray(c) if x.shape[1] == 1 else c


def snow(x: torch.Tensor, c, rng: Rng, centered_trim: bool = False) -> torch.Tensor:
    """Gaussian flakes (``c[0:2]``), zoomed by ``c[2]``, thresholded at ``c[3]``, motion-blurred
    (``c[4:6]``, angle in [-135, -45]) and added twice (rotated 180 degrees) to the image brightened
    towards ``1.5 * gray + 0.5`` with weight ``1 - c[6]``."""
    b, _, h, w = x.shape
    layer = rng.normal(1, h, w, mean=c[0], std=c[1])
    layer = _ops.apply_separable(
        layer, _ops.zoom_matrix(h, c[2], centered_trim, x.device), _ops.zoom_matrix(w, c[2], centered_trim, x.device)
    )
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer).clamp(0, 1)
    layer = _ops.motion_blur(layer, c[4], c[5], rng.uniform(low=-135.0, high=-45.0))
    layer = torch.round(layer * 255) / 255
    brightened = (_ops.gray(x) * 1.5 + 0.5 - x).clamp_min_(0).mul_(1 - c[6]).add_(x)  # c6 x + (1-c6) max(x, ...)
    return brightened.add_(layer + layer.flip(-1, -2)).clamp_(0, 1)


def frost(x: torch.Tensor, c, rng: Rng, cifar: bool = False, textures: str = "procedural") -> torch.Tensor:
    """``c[0] * x + c[1] * texture`` with a frost texture per image (see :mod:`robustlab.corruptions.frost`)."""
    b, ch, h, w = x.shape
    if textures == "procedural":
        tex = _frost.procedural(b, ch, h, w, rng, x.device)
    else:
        tex = _frost.reference(b, ch, h, w, rng, cifar, x.device)
    return tex.to(x).mul_(c[1]).add_(x, alpha=c[0]).clamp_(0, 1)


def fog(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """Add ``c[0]`` times a diamond-square cloud (roughness decay ``c[1]``), rescale by the image maximum."""
    b, _, h, w = x.shape
    size = _frost.next_pow2(max(h, w))
    cloud = _frost.plasma_fractal(b, size, c[1], rng, x.device)[:, None, :h, :w].to(x)
    peak = x.flatten(1).amax(1)[:, None, None, None]
    return ((x + c[0] * cloud) * peak / (peak + c[0])).clamp(0, 1)


def _box3(x: torch.Tensor) -> torch.Tensor:
    return _ops.filter2d_fast(x, torch.full((3, 3), 1 / 9, dtype=torch.float64), "reflect")


def _canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges of (B,1,H,W) 0..255 images: 3x3 Sobel, L1 magnitude, non-maximum suppression in four
    directions, hysteresis by repeated 8-neighbour dilation of the strong edges into the weak ones."""
    sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=img.dtype)
    gx, gy = _ops.filter2d_fast(img, sx, "reflect"), _ops.filter2d_fast(img, sx.T, "reflect")
    mag = gx.abs() + gy.abs()
    ax, ay = gx.abs(), gy.abs()
    tan22 = 0.41421356
    horiz = ay <= ax * tan22
    vert = ay > ax / tan22
    p = F.pad(mag, (1, 1, 1, 1))

    def nb(dy, dx):
        return p[..., 1 + dy : 1 + dy + mag.shape[-2], 1 + dx : 1 + dx + mag.shape[-1]]

    def is_peak(dy, dx):  # larger than the neighbour before, at least the one after, along (dy, dx)
        return (mag > nb(-dy, -dx)) & (mag >= nb(dy, dx))

    diag, rising = ~(horiz | vert), (gx * gy) > 0
    peak = (mag > low) & (
        (horiz & is_peak(0, 1))
        | (vert & is_peak(1, 0))
        | (diag & rising & is_peak(1, 1))
        | (diag & ~rising & is_peak(1, -1))
    )
    edges = peak & (mag > high)
    for _ in range(img.shape[-2] * img.shape[-1]):
        grown = _dilate3(edges) & peak
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges.to(img.dtype)


def _dilate3(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a (..., H, W) bool mask (separable shifted ORs; much faster than max_pool2d)."""
    p = F.pad(mask, (1, 1, 1, 1))
    rows = p[..., :-2, :] | p[..., 1:-1, :] | p[..., 2:, :]
    return rows[..., :-2] | rows[..., 1:-1] | rows[..., 2:]


def _distance(edges: torch.Tensor, cap: float) -> torch.Tensor:
    """Chamfer (1, sqrt 2) distance to the nearest edge pixel, capped at ``cap``: the exact two-pass raster
    scan (Borgefors), vectorised over images and columns. Each row takes the diagonal and vertical steps from
    the row before, then the horizontal steps within the row in one go: ``min_k d[k] + |c - k|`` is a cummin."""
    big = cap + 10.0
    rows = list(torch.where(edges[:, 0] > 0, 0.0, big).to(edges.dtype).unbind(1))
    col = torch.arange(rows[0].shape[-1], dtype=edges.dtype, device=edges.device)
    for order in (range(len(rows)), range(len(rows) - 1, -1, -1)):
        prev = None
        for r in order:
            d = rows[r]
            if prev is not None:
                p = F.pad(prev, (1, 1), value=big)
                d = torch.minimum(d, torch.minimum(p[:, 1:-1] + 1, torch.minimum(p[:, :-2], p[:, 2:]) + 2**0.5))
            if order.step > 0:
                d = torch.cummin(d - col, 1).values + col
            else:
                d = torch.cummin((d + col).flip(1), 1).values.flip(1) - col
            rows[r] = prev = d
    return torch.stack(rows, 1)[:, None].clamp(max=cap)


def _equalize(img: torch.Tensor) -> torch.Tensor:
    """OpenCV ``equalizeHist`` per image on (B,1,H,W) integer-valued 0..255 floats."""
    b = img.shape[0]
    v = img.flatten(1).long().clamp(0, 255)
    hist = torch.zeros(b, 256, dtype=torch.float64, device=img.device).scatter_add_(
        1, v, torch.ones_like(v, dtype=torch.float64)
    )
    total = v.shape[1]
    first = (hist > 0).double().argmax(1, keepdim=True)
    first_count = hist.gather(1, first)
    scale = 255.0 / (total - first_count).clamp_min(1)
    lut = torch.round((hist.cumsum(1) - first_count) * scale).clamp(0, 255)
    lut = torch.where(first_count == total, first.double().expand(-1, 256), lut)
    return lut.gather(1, v).reshape(img.shape).to(img)


def spatter(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """Water (``c[5] == 0``: embossed turquoise drops from a thresholded blurred Gaussian field) or mud
    (``c[5] == 1``: brown blobs) splashes, after ImageNet-C."""
    b, _, h, w = x.shape
    liquid = _ops.gaussian_blur(rng.normal(1, h, w, mean=c[0], std=c[1]).to(x), c[2])
    liquid = torch.where(liquid < c[3], torch.zeros_like(liquid), liquid)
    if c[5] == 0:
        lq8 = torch.floor(liquid * 255).clamp(0, 255)
        dist = _distance(_canny(lq8, 50, 150), 20.0)
        dist = torch.floor(_box3(dist))
        dist = _equalize(dist)
        emboss = torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = torch.round(_ops.filter2d_fast(dist, emboss, "reflect")).clamp(0, 255)
        dist = torch.round(_box3(dist))
        m = liquid * dist
        m = m / m.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None] * c[4]
        if x.shape[1] == 1:
            return (x + _ops.gray((m * _colour(WATER, torch.zeros(1, 3)).to(x)).clamp(0, 1))).clamp(0, 1)
        return (x + m * _colour(WATER, x)).clamp(0, 1)
    m = _ops.gaussian_blur((liquid > c[3]).to(x), c[4])
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    return (x * (1 - m) + _colour(MUD, x) * m).clamp(0, 1)
