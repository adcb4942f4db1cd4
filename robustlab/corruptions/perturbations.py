"""CIFAR-10-P-style perturbation sequences for the flip rate (mFR).

``perturbation_sequence(x, name, length=10, generator=None) -> (B, T, C, H, W)``. Noise sequences are
``T`` independent noisy copies (flips are counted against the first frame, as Hendrycks & Dietterich
do for noise); the others start at the clean image and change a little from frame to frame (flips
are counted between consecutive frames). ``PERTURBATIONS[name]`` says which.
"""

import torch
import torch.nn.functional as F

from robustlab.corruptions import _ops
from robustlab.corruptions._ops import Rng
from robustlab.errors import RobustlabError

PERTURBATIONS = {
    "gaussian_noise": "first",
    "shot_noise": "first",
    "gaussian_blur": "consecutive",
    "brightness": "consecutive",
    "translate": "consecutive",
    "rotate": "consecutive",
    "scale": "consecutive",
}
NOISE_STD, PHOTONS = 0.04, 250.0
MAX_BLUR, MAX_BRIGHTNESS, MAX_ANGLE, MAX_ZOOM = 1.0, 0.3, 15.0, 1.25


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Integer shift per image, the exposed border mirrored."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None] - dy[:, None]
    cols = torch.arange(w, device=x.device)[None] - dx[:, None]
    rows = _ops.pad_index(h, h, h, "symmetric", x.device)[rows + h]
    cols = _ops.pad_index(w, w, w, "symmetric", x.device)[cols + w]
    out = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def perturbation_sequence(x: torch.Tensor, name: str, length: int = 10, generator=None) -> torch.Tensor:
    """(B, ``length``, C, H, W) frames of perturbation ``name`` (see :data:`PERTURBATIONS`); randomness only
    from ``generator`` (one generator, or per-sample :class:`~robustlab.rng.Streams`)."""
    from robustlab.corruptions import check_images

    if name not in PERTURBATIONS:
        raise RobustlabError(f"unknown perturbation {name!r}", f"use one of {', '.join(PERTURBATIONS)}")
    if int(length) < 2:
        raise RobustlabError(f"sequence length {length} is below 2", "pass length >= 2")
    check_images(x, "perturbation_sequence")
    b, t = x.shape[0], int(length)
    rng = Rng(generator, b, x.device)
    steps = torch.linspace(0, 1, t).tolist()
    frames = []
    with torch.no_grad():
        if name == "gaussian_noise":
            noise = rng.normal(t, *x.shape[1:], std=NOISE_STD).to(x)
            return (x[:, None] + noise).clamp(0, 1)
        if name == "shot_noise":
            return (rng.poisson(x[:, None].expand(-1, t, -1, -1, -1) * PHOTONS) / PHOTONS).clamp(0, 1).to(x)
        sign = torch.where(rng.uniform() < 0.5, -1.0, 1.0).to(x.device) if name in ("translate", "rotate") else None
        if name == "translate":
            vertical = (rng.uniform() < 0.5).to(x.device)
        for s in steps:
            if name == "gaussian_blur":
                frames.append(_ops.gaussian_blur(x, s * MAX_BLUR) if s > 0 else x)
            elif name == "brightness":
                v = x.amax(1, keepdim=True)
                v_new = (v + s * MAX_BRIGHTNESS).clamp(max=1)
                frames.append(torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x)).clamp(0, 1))
            elif name == "translate":
                step = (sign * round(s * (t - 1))).long()
                zero = torch.zeros_like(step)
                frames.append(_shift(x, torch.where(vertical, step, zero), torch.where(vertical, zero, step)))
            elif name == "rotate":
                a = torch.deg2rad(sign * s * MAX_ANGLE)
                cos, sin, z = torch.cos(a), torch.sin(a), torch.zeros_like(a)
                frames.append(_warp(x, torch.stack([torch.stack([cos, -sin, z], 1), torch.stack([sin, cos, z], 1)], 1)))
            elif name == "scale":
                k = 1 / (1 + s * (MAX_ZOOM - 1))
                theta = torch.tensor([[k, 0.0, 0.0], [0.0, k, 0.0]]).expand(b, -1, -1)
                frames.append(_warp(x, theta))
    return torch.stack(frames, 1)
