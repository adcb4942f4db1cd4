"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt & pepper) and speckle."""
import torch

from robustlab.corruptions._ops import Rng


def gaussian_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """``x + N(0, c^2)`` per pixel and channel."""
    return (x + rng.normal(*x.shape[1:], std=c)).clamp(0, 1)


def shot_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """``Poisson(c * x) / c``: photon noise with ``c`` photons at full intensity."""
    return (rng.poisson(x * c) / c).clamp(0, 1)


def impulse_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """Salt and pepper: each pixel and channel is replaced with probability ``c``, half by 0, half by 1."""
    flipped = rng.uniform(*x.shape[1:]) <= c
    salt = rng.uniform(*x.shape[1:]) <= 0.5
    return torch.where(flipped, salt.to(x), x)


def speckle_noise(x: torch.Tensor, c: float, rng: Rng) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, c^2)``."""
    return (x + x * rng.normal(*x.shape[1:], std=c)).clamp(0, 1)
