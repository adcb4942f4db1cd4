"""ACAC, ACTC and NTE against hand-computed values, over successful adversarial examples only."""

import math

import pytest
import torch

from robustlab.metrics import ACAC, ACTC, NTE

Y = torch.tensor([0, 0, 1, 2])
CLEAN = torch.eye(3)[[0, 0, 1, 0]] * 5  # logits; the last example is clean-wrong
ADV = torch.tensor(
    [
        [0.2, 0.7, 0.1],  # fooled: adversarial class 1
        [0.6, 0.3, 0.1],  # not fooled
        [0.1, 0.3, 0.6],  # fooled: adversarial class 2
        [0.1, 0.1, 0.8],
    ]
).log()  # fooled, but clean-wrong: not counted


X = torch.zeros(4, 1, 1, 1)


def _run(metric, **kwargs):
    metric.update(None, X, X, Y, CLEAN, ADV, **kwargs)
    return metric.compute().item()


def test_untargeted_by_hand():
    assert _run(ACAC()) == pytest.approx((0.7 + 0.6) / 2)
    assert _run(ACTC()) == pytest.approx((0.2 + 0.3) / 2)
    assert _run(NTE()) == pytest.approx(((0.7 - 0.2) + (0.6 - 0.3)) / 2)


def test_targeted_counts_only_hits_on_the_target():
    target = torch.tensor([2, 1, 2, 2])  # only example 2 reaches its target
    assert _run(ACAC(), target=target) == pytest.approx(0.6)
    assert _run(ACTC(), target=target) == pytest.approx(0.3)
    assert _run(NTE(), target=target) == pytest.approx(0.3)


@pytest.mark.parametrize("metric", [ACAC, ACTC, NTE])
def test_no_successful_example_is_nan_with_warning(metric):
    m = metric()
    m.update(None, X[1:2], X[1:2], Y[1:2], CLEAN[1:2], ADV[1:2])
    with pytest.warns(RuntimeWarning, match=f"{metric.__name__}: empty denominator"):
        assert math.isnan(m.compute().item())
