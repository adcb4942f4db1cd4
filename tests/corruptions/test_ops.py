"""The batched building blocks equal their direct definitions."""

import math

import pytest
import torch

from robustlab.corruptions import _ops


def _motion_blur_direct(x, radius, sigma, angle):
    """Tap by tap: every image shifted by its own rounded step along its angle (edges replicated), taps
    beyond the image dropped."""
    b, c, h, w = x.shape
    width = int(2 * math.ceil(radius) + 1)
    taps = torch.exp(-(torch.arange(width, dtype=torch.float64) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    rad = torch.deg2rad(angle.double())
    out = torch.zeros_like(x, dtype=torch.float64)
    alive = torch.ones(b, dtype=torch.bool)
    for i in range(width):
        dy, dx = -torch.ceil(i * torch.sin(rad) - 0.5).long(), -torch.ceil(i * torch.cos(rad) - 0.5).long()
        alive &= (dy.abs() < h) & (dx.abs() < w)
        rows = (torch.arange(h) - dy[:, None]).clamp(0, h - 1)
        cols = (torch.arange(w) - dx[:, None]).clamp(0, w - 1)
        shifted = x.gather(2, rows[:, None, :, None].expand(b, c, h, w)).gather(
            3, cols[:, None, None].expand(b, c, h, w)
        )
        out += (taps[i] * alive)[:, None, None, None] * shifted
    return out.to(x.dtype)


@pytest.mark.parametrize(
    "shape, angles, radius, sigma",
    [
        ((200, 3, 32, 32), (-45, 45), 15, 5),
        ((9, 1, 33, 40), (-135, -45), 12, 12),
        ((5, 3, 32, 32), (0, 360), 2.6, 1.3),
        ((3, 1, 32, 32), (0, 360), 40, 20),
    ],
)
def test_motion_blur_equals_direct_taps(shape, angles, radius, sigma):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    angle = torch.rand(shape[0], generator=g) * (angles[1] - angles[0]) + angles[0]
    assert torch.allclose(
        _ops.motion_blur(x, radius, sigma, angle), _motion_blur_direct(x, radius, sigma, angle), atol=1e-5
    )


@pytest.mark.parametrize("mode", ["reflect", "replicate", "symmetric"])
def test_sparse_and_low_rank_filters_equal_direct_correlation(mode):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 36, generator=g)
    for kernel in (torch.rand(5, 7, generator=g).double(), torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])):
        direct = _ops.filter2d(x, kernel, mode)
        assert torch.allclose(_ops.filter2d_fast(x, kernel, mode), direct, atol=1e-5)
        assert torch.allclose(_ops.apply_operator(x, _ops.conv_operator(kernel, 32, 36, mode)), direct, atol=1e-5)


def test_kron_operator_equals_separable_products():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 32, 40, generator=g)
    terms = [(_ops.zoom_matrix(32, z, False), _ops.zoom_matrix(40, z, True)) for z in (1.0, 1.1, 1.3)]
    expected = sum(_ops.apply_separable(x, a, b) for a, b in terms)
    assert torch.allclose(_ops.apply_operator(x, _ops.kron_operator(terms)), expected, atol=1e-5)
