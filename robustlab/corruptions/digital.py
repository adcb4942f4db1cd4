"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG and (held-out) saturate."""

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from robustlab.corruptions import _ops
from robustlab.corruptions._ops import Rng


def brightness(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """HSV value ``V + c`` (clipped), hue and saturation kept. RGB is linear in V at fixed H and S, so
    this scales each pixel by ``V'/V`` (black pixels become gray ``V'``); one channel: ``x + c``."""
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(max=1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x)).clamp(0, 1)


def contrast(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """Shrink each channel towards its image mean by the factor ``c``."""
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def saturate(x: torch.Tensor, c, rng: Rng) -> torch.Tensor:
    """HSV saturation ``S * c[0] + c[1]`` (clipped), hue and value kept. At fixed H and V each channel is
    ``V - S * V * a`` with ``a = (V - channel) / (V - min)`` set by the hue (``(0, 1, 1)`` for gray pixels,
    hue 0), so the new channel is ``V - S' * V * a``. Grayscale images are saturated as gray RGB (so
    ``c[1] > 0`` tints them red) and converted back by luma."""
    rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    v = rgb.amax(1, keepdim=True)
    delta = v - rgb.amin(1, keepdim=True)
    s_new = (torch.where(v > 0, delta / v.clamp_min(1e-12), 0.0) * c[0] + c[1]).clamp(0, 1)
    gray_hue = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device)[None, :, None, None]
    a = torch.where(delta > 0, (v - rgb) / delta.clamp_min(1e-12), gray_hue)
    out = (v - s_new * v * a).clamp(0, 1)
    return _ops.gray(out) if x.shape[1] == 1 else out


def pil_resize_matrix(n_in: int, n_out: int, mode: str, device=None) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's ``resize`` along one axis: ``box`` (box filter widened by the
    downscale factor, taps at pixel centres) or ``nearest`` (source ``floor((i + 0.5) * n_in / n_out)``)."""
    scale = n_in / n_out
    centre = (torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * scale
    if mode == "nearest":
        src = centre.floor().long().clamp(max=n_in - 1)
        return F.one_hot(src, n_in).double()
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    xs = torch.arange(n_in, dtype=torch.float64, device=device)[None]
    lo = (centre - support + 0.5).floor().clamp(min=0)[:, None]
    hi = (centre + support + 0.5).floor().clamp(max=n_in)[:, None]
    arg = (xs - centre[:, None] + 0.5) / filterscale
    wts = ((arg > -0.5) & (arg <= 0.5) & (xs >= lo) & (xs < hi)).double()
    return wts / wts.sum(1, keepdim=True)


def pixelate(x: torch.Tensor, c: float, rng: Rng, upsample: str = "nearest") -> torch.Tensor:
    """PIL box downscale to ``int(side * c)`` then upscale back (``nearest`` as ``imagecorruptions``,
    ``box`` as the CIFAR-10-C code)."""
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    down = _ops.apply_separable(x, pil_resize_matrix(h, sh, "box", x.device), pil_resize_matrix(w, sw, "box", x.device))
    return _ops.apply_separable(
        down, pil_resize_matrix(sh, h, upsample, x.device), pil_resize_matrix(sw, w, upsample, x.device)
    ).clamp(0, 1)


def jpeg_compression(x: torch.Tensor, c: int, rng: Rng) -> torch.Tensor:
    """Encode and decode with libjpeg at quality ``c`` (torchvision; 4:2:0 chroma subsampling as PIL)."""
    u8 = torch.round(x * 255).to(torch.uint8)
    encoded = encode_jpeg(list(u8.cpu() if x.device.type != "cuda" else u8), quality=int(c))
    decoded = decode_jpeg(encoded, device=x.device)
    return torch.stack(decoded).to(x) / 255


def _sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` at pixel coordinates (B,H,W), reflected about the image border
    (scipy ``mode='reflect'``)."""
    h, w = x.shape[-2:]
    grid = torch.stack([cols.mul(2 / w).add_(1 / w - 1), rows.mul(2 / h).add_(1 / h - 1)], -1).to(x)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def elastic_transform(x: torch.Tensor, c, rng: Rng, cifar: bool = False) -> torch.Tensor:
    """Smooth random displacement field. ``imagenet``: uniform noise of amplitude 0.5% of the height,
    Gaussian-smoothed (std 1% of the side, truncated at 3 std) and scaled by ``c`` (as
    ``imagecorruptions``). ``cifar``: a random affine warp (corners moved by up to ``c[2]``) then unit
    noise smoothed by ``c[1]`` and scaled by ``c[0]``, all as fractions of the side (one resampling
    instead of the CIFAR code's two)."""
    b, _, h, w = x.shape
    if cifar:
        side = h
        alpha, sigma, affine = (v * side for v in c)
        amp = 1.0
    else:
        alpha, sigma, affine = c, (h * 0.01, w * 0.01), 0.0
        amp = h * 0.005
    disp = rng.uniform(2, h, w, low=-amp, high=amp).to(x)
    if not (cifar and sigma == 0):
        disp = _ops.gaussian_blur(disp, sigma, mode="symmetric", truncate=3.0)
    disp = disp * alpha
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None] + disp[:, 1]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :] + disp[:, 0]
    if cifar:
        centre, size = torch.tensor([h // 2, w // 2], dtype=torch.float64), min(h, w) // 3
        pts1 = torch.stack([centre + size, torch.stack([centre[0] + size, centre[1] - size]), centre - size])
        pts2 = pts1[None] + rng.uniform(3, 2, low=-affine, high=affine).double().cpu()
        ones = torch.ones(b, 3, 1, dtype=torch.float64)
        m = torch.linalg.solve(torch.cat([pts1[None].expand(b, -1, -1), ones], 2), pts2).transpose(1, 2)
        inv = torch.linalg.inv(m[:, :, :2]).to(x)
        t = m[:, :, 2].to(x)
        qx, qy = cols - t[:, 0, None, None], rows - t[:, 1, None, None]
        cols = inv[:, 0, 0, None, None] * qx + inv[:, 0, 1, None, None] * qy
        rows = inv[:, 1, 0, None, None] * qx + inv[:, 1, 1, None, None] * qy
    return _sample(x, rows, cols).clamp(0, 1)
