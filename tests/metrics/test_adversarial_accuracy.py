"""AAW and AAB: the share of all samples right both clean and under attack."""

import math

import pytest
import torch

from robustlab.metrics import AAB, AAW


@pytest.mark.parametrize("metric", [AAW, AAB])
def test_by_hand(metric):
    y = torch.tensor([0, 1, 2, 0])
    clean = torch.eye(3)[[0, 1, 2, 1]]  # the last one is wrong clean
    adv = torch.eye(3)[[0, 2, 2, 0]]  # right, fooled, right, right (but clean-wrong)
    m = metric()
    m.update(None, None, None, y[:2], clean[:2], adv[:2])
    m.update(None, None, None, y[2:], clean[2:], adv[2:])
    assert m.compute().item() == pytest.approx(2 / 4) and m.total.item() == 4
    with pytest.warns(RuntimeWarning, match=f"{metric.__name__}: empty denominator"):
        assert math.isnan(metric().compute().item())
