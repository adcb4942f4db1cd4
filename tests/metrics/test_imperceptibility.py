"""ALD_p by hand (both variants), ASS against scikit-image, PSD by hand and against a per-pixel loop."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from robustlab import RobustlabError
from robustlab.metrics import ASS, PSD, ALDp
from robustlab.metrics.functional import lp_distortion, perturbation_sensitivity_distance, ssim


def _feed(metric, x, x_adv, fooled=None):
    """Update with logits that make every example (or those in ``fooled``) a successful adversarial one."""
    n = len(x)
    fooled = torch.ones(n, dtype=torch.bool) if fooled is None else fooled
    y = torch.zeros(n, dtype=torch.long)
    clean = torch.tensor([[1.0, 0.0]]).expand(n, 2)
    adv = torch.where(fooled[:, None], torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    metric.update(None, x, x_adv, y, clean, adv)
    return metric


X = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2], [0.9, 0.1, 0.3, 0.0]], dtype=torch.float64).view(
    3, 1, 2, 2
)
X_ADV = torch.tensor([[0.5, 0.7, 0.0, 0.1], [0.2, 0.201, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64).view(
    3, 1, 2, 2
)
FOOLED = torch.tensor([True, True, False])  # the third example failed: not averaged


def test_aldp_normalized_by_hand():
    result = _feed(ALDp(), X, X_ADV, FOOLED).compute()
    # example 0: delta (0, .2, 0, .1) against x (.5, .5, 0, 0); example 1: delta (0, .001, 0, 0) against 0.2s,
    # below half a grey level, so no changed pixel for L0 (it once counted every nonzero delta)
    assert result["L0"].item() == pytest.approx((2 / 2 + 0 / 4) / 2)
    assert result["L2"].item() == pytest.approx((math.sqrt(0.05) / math.sqrt(0.5) + 0.001 / 0.4) / 2)
    assert result["Linf"].item() == pytest.approx((0.2 / 0.5 + 0.001 / 0.2) / 2)


def test_aldp_deepsec_code_variant_by_hand():
    result = _feed(ALDp(normalized=False), X, X_ADV, FOOLED).compute()
    # 8-bit values: example 0 changes 128 -> 178 and 0 -> 26 (2 of 4); example 1's 51.0 -> 51.3 rounds to 51
    assert result["L0"].item() == pytest.approx((2 / 4 + 0) / 2)
    assert result["L2"].item() == pytest.approx((math.sqrt(0.05) + 0.001) / 2)
    assert result["Linf"].item() == pytest.approx((0.2 + 0.001) / 2)


def test_aldp_leaves_out_an_all_zero_image_with_warning():
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    x[1] = 0.5
    metric = ALDp()
    with pytest.warns(RuntimeWarning, match="ALDp: 3 undefined"):
        _feed(metric, x, x + 0.1)
    assert metric.compute()["Linf"].item() == pytest.approx(0.2) and metric.count.tolist() == [1, 1, 1]
    with pytest.warns(RuntimeWarning, match="ALDp L2: empty denominator"):
        assert math.isnan(ALDp().compute()["L2"].item())


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_scikit_image(channels):
    g = torch.Generator().manual_seed(channels)
    x = torch.rand(3, channels, 16, 20, generator=g, dtype=torch.float64)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    reference = [
        structural_similarity(
            a.numpy(),
            b.numpy(),
            data_range=1.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(x_adv, x)
    ]
    torch.testing.assert_close(ssim(x_adv, x), torch.tensor(reference, dtype=torch.float64))
    assert _feed(ASS(), x.float(), x_adv.float()).compute().item() == pytest.approx(np.mean(reference), abs=1e-6)
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3)


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(RobustlabError, match="at least 11 px"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_psd_by_hand():
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2
    x = checker.double().view(1, 1, 4, 4)  # every 3x3 region (reflect-padded) holds 5 of one, 4 of the other
    x_adv = x.clone()
    x_adv[0, 0, 1, 2] += 0.1
    std = math.sqrt(20) / 9
    assert perturbation_sensitivity_distance(x, x_adv).item() == pytest.approx(0.1 / std)
    assert perturbation_sensitivity_distance(x, x_adv, sensitivity="one_minus").item() == pytest.approx(0.1 * (1 - std))
    flat = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)  # std 0: sensitivity floored at 1/std_floor
    assert perturbation_sensitivity_distance(flat, flat + 0.1 * (x == 1)).item() == pytest.approx(8 * 0.1 * 255)
    psd = _feed(PSD(), torch.cat([x, flat]), torch.cat([x_adv, flat + 0.1 * (x == 1)])).compute().item()
    assert psd == pytest.approx((0.1 / std + 8 * 0.1 * 255) / 2)


def test_psd_equals_a_per_pixel_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 5, generator=g, dtype=torch.float64)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected = []
    for xi, ai in zip(x.numpy(), x_adv.numpy()):
        total = 0.0
        for c in range(3):
            padded = np.pad(xi[c], 1, mode="reflect")
            for i in range(6):
                for j in range(5):
                    total += abs(ai[c, i, j] - xi[c, i, j]) / max(np.std(padded[i : i + 3, j : j + 3]), 1 / 255)
        expected.append(total)
    torch.testing.assert_close(perturbation_sensitivity_distance(x, x_adv), torch.tensor(expected, dtype=torch.float64))


def test_psd_rejects_bad_options():
    with pytest.raises(RobustlabError, match="sensitivity"):
        PSD(sensitivity="std")
    with pytest.raises(RobustlabError, match="odd"):
        PSD(region=4)


@pytest.mark.parametrize("metric", [ASS, PSD])
def test_no_successful_example_is_nan_with_warning(metric):
    m = _feed(metric(), torch.rand(2, 1, 12, 12), torch.rand(2, 1, 12, 12), torch.tensor([False, False]))
    with pytest.warns(RuntimeWarning, match=f"{metric.__name__}: empty denominator"):
        assert math.isnan(m.compute().item())


def test_l0_counts_changed_8_bit_values_not_float_jitter():
    x = torch.randint(0, 256, (3, 1, 6, 6)).double() / 255
    jitter = ((torch.tanh(torch.atanh((2 * x - 1) * (1 - 1e-6))) + 1) / 2).float()  # CW2's tanh round trip
    assert (jitter.double() != x).any()
    for normalized in (True, False):
        assert (lp_distortion(x, jitter, normalized)[:, 0] == 0).all(), normalized
    moved = x.clone()
    moved[:, 0, 0, :2] = 1 - moved[:, 0, 0, :2]  # two pixels flipped: changed
    moved[:, 0, 1, 0] += 0.4 / 255  # below half a grey level: the 8-bit value does not change
    changed = ((255 * moved).round() != (255 * x).round()).double().sum((1, 2, 3))
    assert torch.equal(lp_distortion(x, moved, normalized=False)[:, 0], changed / 36)
