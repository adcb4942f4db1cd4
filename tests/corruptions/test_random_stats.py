"""Random corruptions: the change they make has the reference's statistics at every severity."""

import numpy as np
import pytest
import torch

from robustlab.corruptions import CORRUPTIONS, corrupt
from tests.corruptions.conftest import as_batch

RANDOM = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "glass_blur",
    "elastic_transform",
    "snow",
    "fog",
    "spatter",
    "frost",
]
REPEATS = {"frost": 100, "spatter": 100, "fog": 24, "snow": 16}


def _stats(change: torch.Tensor) -> dict:
    return {"mean": change.abs().mean().item(), "std": change.std().item()}


@pytest.mark.parametrize("name", RANDOM)
def test_change_statistics_match_reference(photos64, name):
    from imagecorruptions import corrupt as reference

    reps = REPEATS.get(name, 4)
    x = as_batch(photos64).repeat(reps, 1, 1, 1).double()
    for s in range(1, 6):
        np.random.seed(s)
        ref = np.stack([reference(im, s, name) for _ in range(reps) for im in photos64]).astype(np.float64) / 255
        ref = torch.from_numpy(ref).permute(0, 3, 1, 2)
        ours = corrupt(x.float(), name, s, torch.Generator().manual_seed(s), params="imagenet").double()
        a, b = _stats(ours - x), _stats(ref - x)
        for key in a:
            assert abs(a[key] / b[key] - 1) <= 0.10, (s, key, a, b)
        if name == "impulse_noise":
            hit = lambda y: ((y - x).abs() > 1.5 / 255).double().mean().item()  # noqa: E731
            assert abs(hit(ours) / hit(ref) - 1) <= 0.10
        if name == "gaussian_noise":
            mid = torch.full((4, 3, 64, 64), 0.5)
            noise = corrupt(mid, name, s, torch.Generator().manual_seed(0), params="imagenet") - 0.5
            expected = [0.08, 0.12, 0.18, 0.26, 0.38][s - 1]
            clipped = np.clip(np.random.normal(0.5, expected, 200000), 0, 1) - 0.5
            assert abs(noise.std().item() / clipped.std() - 1) <= 0.05


# Not monotone in the published tables themselves (the reference shows the same): glass blur (fewer
# iterations or a smaller sigma at some higher severities), frost (image weight falls while the texture
# weight stays), spatter (water turns to mud at 4), saturate (desaturating 1-2, oversaturating 3-5);
# CIFAR-10-C motion blur (severities 3 and 4 differ only in the negligible radius) and elastic (the affine
# part shrinks with severity).
NOT_MONOTONE = {
    "cifar": {"glass_blur", "frost", "spatter", "saturate", "motion_blur", "elastic_transform"},
    "imagenet": {"glass_blur", "frost", "spatter", "saturate"},
}


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_severity_is_monotone(photos64, params):
    """Higher severity, larger mean change (except ``NOT_MONOTONE``)."""
    x = as_batch(photos64).repeat(8, 1, 1, 1)
    for name in (c for c in CORRUPTIONS if c not in NOT_MONOTONE[params]):
        means = [
            (corrupt(x, name, s, torch.Generator().manual_seed(0), params=params) - x).abs().mean().item()
            for s in range(1, 6)
        ]
        assert all(a < b for a, b in zip(means, means[1:])), (name, means)
