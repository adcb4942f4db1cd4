"""Batched input transformations of the input-transformation defenses (EIT, RT), on [0,1] images.

Randomness comes from ``generator`` (a ``torch.Generator`` on the CPU) or torch's global RNG.
"""

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg


def _randint(high: torch.Tensor | int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` integers uniform in ``[0, high)`` (``high`` per draw or shared)."""
    return (torch.rand(n, generator=generator) * torch.as_tensor(high)).long()


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise to ``2**bits`` levels: ``round(x * (2**bits - 1)) / (2**bits - 1)`` (Xu et al.; Guo et al.)."""
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress each image at ``quality`` (libjpeg via torchvision) after rounding to 8 bits."""
    images = list((x.detach() * 255).round().to(torch.uint8).cpu())
    decoded = decode_jpeg(encode_jpeg(images, quality=quality))
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255


def _grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along rows and columns, zero on the last row / column (Neumann)."""
    return F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)), F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))


def _div(py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Minus the adjoint of :func:`_grad`, for fields that are zero on the last row / column."""
    return py - F.pad(py[..., :-1, :], (0, 0, 1, 0)) + px - F.pad(px[..., :-1], (1, 0))


def tv_minimise(x: torch.Tensor, weight: float, mask: torch.Tensor | None = None, steps: int = 200) -> torch.Tensor:
    """Anisotropic TV minimisation ``argmin_u TV(u) + weight / 2 * sum(mask * (u - x)**2)`` per image
    and channel, solved with ``steps`` Chambolle-Pock primal-dual iterations.

    Guo et al. 2018 (as in their released code and DEEPSEC): ``mask`` keeps each pixel with
    probability 0.5 and ``weight = 2 / lambda_tv``; dropped pixels (mask 0) are filled in by the TV
    term. Without a mask this is the anisotropic ROF problem of
    ``skimage.restoration.denoise_tv_bregman(x, weight, isotropic=False)``.
    """
    m = torch.ones_like(x) if mask is None else mask.to(x).expand_as(x)
    tau = sigma = 8**-0.5  # tau * sigma * ||grad||^2 <= 1
    u, u_bar = x.clone(), x.clone()
    py, px = torch.zeros_like(x), torch.zeros_like(x)
    fidelity = tau * weight * m
    for _ in range(steps):
        gy, gx = _grad(u_bar)
        py, px = (py + sigma * gy).clamp(-1, 1), (px + sigma * gx).clamp(-1, 1)
        u_prev = u
        u = (u + tau * _div(py, px) + fidelity * x) / (1 + fidelity)
        u_bar = 2 * u - u_prev
    return u


def crop_rescale(x: torch.Tensor, crop: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``crop`` x ``crop`` window per image, rescaled (nearest) back to the input size."""
    n, _, h, w = x.shape
    top, left = _randint(h - crop + 1, n, generator), _randint(w - crop + 1, n, generator)
    windows = torch.stack([img[:, t : t + crop, s : s + crop] for img, t, s in zip(x, top.tolist(), left.tolist())])
    return F.interpolate(windows, size=(h, w), mode="nearest-exact")


def resize_pad(
    x: torch.Tensor, final: int, pad_value: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Xie et al. 2018: resize each image (nearest) to a random side ``r`` in ``[size, final)``, then
    pad it with ``pad_value`` to ``final`` x ``final`` at a random offset in ``[0, final - r)`` per axis.
    Differentiable in ``x``."""
    n, _, size, _ = x.shape
    sides = size + _randint(final - size, n, generator)
    tops, lefts = _randint(final - sides, n, generator), _randint(final - sides, n, generator)
    out = []
    for img, r, t, s in zip(x, sides.tolist(), tops.tolist(), lefts.tolist()):
        resized = F.interpolate(img[None], size=(r, r), mode="nearest")
        out.append(F.pad(resized, (s, final - r - s, t, final - r - t), value=pad_value))
    return torch.cat(out)
