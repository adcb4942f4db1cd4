"""CAV, CRR, CSR, CCV and COS by hand; the JS divergence against scipy."""

import math

import pytest
import torch
from scipy.spatial.distance import jensenshannon

from robustlab.metrics import CAV, CCV, COS, CRR, CSR
from robustlab.metrics.functional import js_divergence

Y = torch.tensor([0, 1, 2, 0, 1])
BASE = torch.tensor(
    [
        [0.7, 0.2, 0.1],  # right
        [0.5, 0.4, 0.1],  # wrong, defended right: rectified
        [0.1, 0.1, 0.8],  # right, defended wrong: sacrificed
        [0.3, 0.6, 0.1],  # wrong, defended right: rectified
        [0.1, 0.8, 0.1],
    ]
)  # right
DEF = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.5, 0.2, 0.3], [0.4, 0.35, 0.25], [0.2, 0.7, 0.1]])


def test_js_divergence_equals_scipy():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 5, generator=g, dtype=torch.float64).softmax(1)
    q = torch.rand(6, 5, generator=g, dtype=torch.float64).softmax(1)
    q[0] = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)  # zero entries are fine
    expected = [jensenshannon(a.numpy(), b.numpy()) ** 2 for a, b in zip(p, q)]
    torch.testing.assert_close(js_divergence(p, q), torch.tensor(expected, dtype=torch.float64))


def _run(metric):
    metric.update(DEF.log(), BASE.log(), Y)
    return metric.compute().item()


def test_by_hand():
    assert _run(CAV()) == pytest.approx(4 / 5 - 3 / 5)
    assert _run(CRR()) == pytest.approx(2 / 5)
    assert _run(CSR()) == pytest.approx(1 / 5)
    # both right on examples 0 and 4
    assert _run(CCV()) == pytest.approx((0.2 + 0.1) / 2)
    cos = (
        jensenshannon(BASE[0].numpy(), DEF[0].numpy()) ** 2 + jensenshannon(BASE[4].numpy(), DEF[4].numpy()) ** 2
    ) / 2
    assert _run(COS()) == pytest.approx(cos)


@pytest.mark.parametrize("metric", [CCV, COS])
def test_no_example_right_for_both_is_nan_with_warning(metric):
    m = metric()
    m.update(DEF[1:3].log(), BASE[1:3].log(), Y[1:3])
    with pytest.warns(RuntimeWarning, match=f"{metric.__name__}: empty denominator"):
        assert math.isnan(m.compute().item())


@pytest.mark.parametrize("metric", [CAV, CRR, CSR])
def test_no_example_is_nan_with_warning(metric):
    with pytest.warns(RuntimeWarning, match=f"{metric.__name__}: empty denominator"):
        assert math.isnan(metric().compute().item())
