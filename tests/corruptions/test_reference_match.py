"""Deterministic corruptions equal the reference (imagecorruptions-imaug) up to its uint8 rounding."""

import numpy as np
import pytest
import torch

from robustlab.corruptions import _ops, corrupt
from robustlab.corruptions.params import PARAMS
from tests.corruptions.conftest import as_batch, photos

DETERMINISTIC = [
    "brightness",
    "contrast",
    "saturate",
    "jpeg_compression",
    "pixelate",
    "defocus_blur",
    "gaussian_blur",
    "zoom_blur",
]
TOLERANCE = 2 / 255


def _gap(images, name, severity):
    from imagecorruptions import corrupt as reference

    ref = np.stack([reference(im, severity, name) for im in images]).astype(np.float64) / 255
    ours = corrupt(as_batch(images), name, severity, params="imagenet").permute(0, 2, 3, 1).double().numpy()
    return np.abs(ours - ref).mean(axis=(1, 2, 3)).max()


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_matches_reference_at_64px(photos64, name):
    gaps = [_gap(photos64, name, s) for s in range(1, 6)]
    assert max(gaps) <= TOLERANCE, gaps


def test_motion_blur_matches_reference_for_the_same_angle(photos64):
    """The reference draws its angle with ``np.random.uniform(-45, 45)`` first: replay it."""
    from imagecorruptions import corrupt as reference

    x = as_batch(photos64)
    for s in range(1, 6):
        radius, sigma = PARAMS["imagenet"]["motion_blur"][s - 1]
        for i, im in enumerate(photos64):
            np.random.seed(10 * s + i)
            angle = np.random.uniform(-45, 45)
            np.random.seed(10 * s + i)
            ref = reference(im, s, "motion_blur").astype(np.float64) / 255
            ours = _ops.motion_blur(x[i : i + 1], radius, sigma, torch.tensor([angle])).clamp(0, 1)
            assert np.abs(ours[0].permute(1, 2, 0).double().numpy() - ref).mean() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_matches_reference_at_224px(name):
    images = photos(224)
    assert max(_gap(images, name, s) for s in range(1, 6)) <= TOLERANCE
