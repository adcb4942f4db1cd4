"""Feature squeezing: Xu et al.'s squeezers, the max-L1 score and a threshold set for the FPR."""

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import nn

from robustlab import RobustlabError
from robustlab.defenses.detector import fpr_threshold
from robustlab.defenses.feature_squeezing import FeatureSqueezingDetector, bit_depth, median_smoothing, non_local_means


class MeanLogit(nn.Module):
    """Logits ``[10 * mean(x), 0]``: its prediction moves when squeezing moves the mean."""

    def forward(self, x):
        return torch.stack([10 * x.flatten(1).mean(1), torch.zeros(len(x))], 1)


def test_squeezers_match_xu_definitions():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 9, 7)
    assert torch.equal(bit_depth(x, 1), (x > 0.5).float())
    assert torch.allclose(bit_depth(x, 5), torch.from_numpy(np.rint(x.numpy() * 31) / 31))
    for size in (2, 3):  # scipy.ndimage.median_filter, as Xu et al.'s code
        expected = scipy.ndimage.median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
        assert torch.equal(median_smoothing(x, size), torch.from_numpy(expected))
    flat = 0.5 + torch.randint(-3, 4, (2, 3, 16, 16)) / 255  # faint noise on a flat image (strength 4 of 255)
    for img in (flat, flat[:, :1]):
        out = non_local_means(img, 11, 3, 4)
        assert out.shape == img.shape and (out - 0.5).abs().mean() < 0.5 * (img - 0.5).abs().mean()


def test_score_is_the_max_l1_softmax_distance():
    det = FeatureSqueezingDetector(MeanLogit(), {"bit_depth": 1, "median": 2})
    x = torch.full((1, 1, 4, 4), 0.4)
    x[0, 0, 0, 0] = 1.0  # mean 7/16; 1-bit depth keeps only that pixel: mean 1/16

    def l1(a, b):  # L1 distance of the two-class softmaxes of logits [10a, 0] and [10b, 0]
        return 2 * abs(1 / (1 + math.exp(-10 * a)) - 1 / (1 + math.exp(-10 * b)))

    # 2x2 median (window up-left, edge repeated, upper median): (0,0), (0,1) and (1,0) become 1.
    expected = max(l1(7 / 16, 1 / 16), l1(7 / 16, (3 * 1.0 + 13 * 0.4) / 16))
    assert det.scores(x).item() == pytest.approx(expected, rel=1e-5)


def test_flags_squeezing_disagreement_above_the_threshold():
    torch.manual_seed(0)
    det = FeatureSqueezingDetector(MeanLogit(), {"bit_depth": 1}, fpr=0.05)
    # Clean validation images: binary digits plus faint noise, so squeezing barely moves them.
    val = ((torch.rand(200, 1, 6, 6) > 0.5).float() + 0.04 * torch.rand(200, 1, 6, 6)).clamp(0, 1)
    det.calibrate(val)
    scores = det.scores(val)[:, 0]
    assert det.threshold.item() in scores
    assert det.detect(val).sum() == 10, "5% of 200 validation images exceed the threshold"
    grey, binary = torch.full((1, 1, 6, 6), 0.4), (torch.rand(1, 1, 6, 6) > 0.5).float()
    assert det.scores(grey).item() > det.threshold.item() and det.detect(grey).item()
    assert not det.detect(binary).item()


def test_fpr_threshold():
    scores = torch.randperm(200).float()
    for fpr, flagged in [(0.05, 10), (0.0, 0), (0.123, 24)]:
        assert (scores > fpr_threshold(scores, fpr)).sum() == flagged
    with pytest.raises(RobustlabError, match="false-positive rate"):
        fpr_threshold(scores, 1.5)
    with pytest.raises(RobustlabError, match="no threshold"):
        FeatureSqueezingDetector(MeanLogit(), {"bit_depth": 1}).detect(torch.rand(1, 1, 4, 4))
    with pytest.raises(RobustlabError, match="unknown squeezer"):
        FeatureSqueezingDetector(MeanLogit(), {"jpeg": 75})
