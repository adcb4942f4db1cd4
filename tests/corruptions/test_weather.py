"""Spatter's distance transform equals plain relaxation to convergence."""

import torch
import torch.nn.functional as F

from robustlab.corruptions.weather import _distance


def _relaxed(edges, cap):
    big = cap + 10.0
    d = torch.where(edges > 0, 0.0, big)
    h, w = d.shape[-2:]
    while True:
        p = F.pad(d, (1, 1, 1, 1), value=big)
        new = d.clone()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                cost = (dy * dy + dx * dx) ** 0.5
                new = torch.minimum(new, p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] + cost)
        if torch.equal(new, d):
            return d.clamp(max=cap)
        d = new


def test_two_pass_chamfer_distance_equals_relaxation():
    g = torch.Generator().manual_seed(0)
    for shape, density in (
        ((20, 1, 32, 32), 0.003),
        ((20, 1, 32, 32), 0.05),
        ((3, 1, 40, 33), 0.0),
        ((2, 1, 64, 48), 0.01),
    ):
        edges = (torch.rand(shape, generator=g) < density).float()
        assert torch.allclose(_distance(edges, 20.0), _relaxed(edges, 20.0), atol=1e-5)
