"""RGB by hand on a one-pixel threshold model; RIC against a PIL JPEG round trip."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from robustlab import RobustlabError
from robustlab.metrics import RGB, RIC


class CentreThreshold(nn.Module):
    """Class 1 when the centre pixel exceeds 0.5, else class 0."""

    def forward(self, x):
        c = x[:, 0, x.shape[2] // 2, x.shape[3] // 2]
        return torch.stack([torch.zeros_like(c), 10 * (c - 0.5)], 1)


def _update(metric, model, x, x_adv, y, target=None):
    metric.update(model, x, x_adv, y, model(x), model(x_adv), target)
    return metric


def test_rgb_by_hand():
    model = CentreThreshold()
    x = torch.zeros(3, 1, 9, 9)
    x_adv = x.clone()
    x_adv[:, 0, 4, 4] = torch.tensor([1.0, 0.7, 0.3])  # the third is no adversarial example
    y = torch.zeros(3, dtype=torch.long)
    # sigma 0.5, 5 taps: the centre keeps (1 / (1 + 2e^-2 + 2e^-8))^2 = 0.6187 of its value after blurring
    keep = (1 / (1 + 2 * math.exp(-2) + 2 * math.exp(-8))) ** 2
    assert 1.0 * keep > 0.5 > 0.7 * keep
    assert _update(RGB(radius=0.5), model, x, x_adv, y).compute().item() == pytest.approx(1 / 2)
    assert _update(RGB(radius=2.0), model, x, x_adv, y).compute().item() == 0.0
    targeted = _update(RGB(radius=0.5), model, x, x_adv, y, target=torch.tensor([1, 1, 1]))
    assert targeted.compute().item() == pytest.approx(1 / 2)


def _pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for img in (x * 255).round().to(torch.uint8):
        array = img.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(buf, format="JPEG", quality=quality)
        decoded = np.array(Image.open(buf), dtype=np.float32).reshape(array.shape)
        out.append(torch.from_numpy(decoded).permute(2, 0, 1) / 255)
    return torch.stack(out)


@pytest.mark.parametrize("channels", [1, 3])
def test_ric_equals_a_pil_jpeg_round_trip(channels):
    g = torch.Generator().manual_seed(channels)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16 * 16, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=g) * 0.2)
    x = torch.rand(64, channels, 16, 16, generator=g)
    x_adv = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y = model(x).argmax(1)
    with torch.no_grad():
        success = model(x_adv).argmax(1) != y
        survived = model(_pil_jpeg(x_adv, 55)).argmax(1) != y
    assert 0 < (success & survived).sum() < success.sum(), "the test needs examples that do and do not survive"
    with torch.no_grad():
        ric = _update(RIC(quality=55), model, x, x_adv, y).compute().item()
    assert ric == pytest.approx((success & survived).sum().item() / success.sum().item())


def test_options_and_empty_denominator():
    with pytest.raises(RobustlabError, match="quality"):
        RIC(quality=0)
    with pytest.raises(RobustlabError, match="radius"):
        RGB(radius=0)
    with pytest.warns(RuntimeWarning, match="RIC: empty denominator"):
        assert math.isnan(RIC().compute().item())
