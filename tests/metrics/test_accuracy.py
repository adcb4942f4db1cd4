"""CA and MR against hand-computed values; empty denominators give NaN and a warning."""

import math

import pytest
import torch

from robustlab.metrics import CA, MR
from robustlab.metrics.computation_cost import CC


def test_ca_streams_like_one_batch():
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    preds = torch.tensor([0, 1, 0, 3, 0, 5, 6])
    metric = CA()
    metric.update(preds[:3], y[:3])
    metric.update(preds[3:], y[3:])
    assert metric.compute().item() == pytest.approx(5 / 7) and metric.total.item() == 7


def test_mr_counts_only_clean_correct_examples():
    y = torch.tensor([0, 1, 2, 3])
    clean = torch.tensor([0, 1, 2, 9])  # the last one is already wrong: not in the denominator
    adv = torch.tensor([5, 1, 7, 9])
    metric = MR()
    metric.update(clean, adv, y)
    assert metric.compute().item() == pytest.approx(2 / 3)
    targeted = MR()
    targeted.update(clean, adv, y, target=torch.tensor([5, 2, 2, 0]))
    assert targeted.compute().item() == pytest.approx(1 / 3)


def test_empty_denominator_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="MR: empty denominator"):
        assert math.isnan(MR().compute().item())


def test_cc_is_seconds_per_example():
    metric = CC()
    metric.update(1.5, 10)
    metric.update(0.5, 10)
    assert metric.compute().item() == pytest.approx(0.1)
