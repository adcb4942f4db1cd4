"""The named options behind the documented departures from the papers' equations: ACTC/NTE over all examples,
mCE summed over severities, EBD-2 counting until the prediction leaves the true class."""

import copy

import pytest
import torch
from torch import nn

from robustlab import RobustlabError
from robustlab.attacks import BIM
from robustlab.metrics import ACTC, EBD2, MCE, NTE
from robustlab.metrics.structure import class_iterations

Y = torch.tensor([0, 0, 1, 2])
CLEAN = torch.eye(3)[[0, 0, 1, 0]] * 5
ADV = torch.tensor([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.1, 0.1, 0.8]]).log()
X = torch.zeros(4, 1, 1, 1)


def test_actc_and_nte_over_all_examples_follow_eqs_10_and_11():
    actc, nte = ACTC(over="all"), NTE(over="all")
    for metric in (actc, nte):
        metric.update(None, X, X, Y, CLEAN, ADV)
    assert actc.compute().item() == pytest.approx((0.2 + 0.6 + 0.3 + 0.8) / 4)
    assert nte.compute().item() == pytest.approx((0.5 + 0.3 + 0.3 + 0.7) / 4)
    with pytest.raises(RobustlabError, match="over=successful"):
        ACTC(over="some")


def test_unnormalised_mce_summed_over_severities_is_eq_12():
    y = torch.zeros(4, dtype=torch.long)
    tables = {}
    for reduction in ("mean", "sum"):
        m = MCE(corruptions=("fog", "snow"), severities=2, severity_reduction=reduction)
        for name, errors in (("fog", (1, 2)), ("snow", (3, 4))):
            for s, wrong in enumerate(errors, start=1):
                m.update(torch.tensor([1] * wrong + [0] * (4 - wrong)), y, name, s)
        m.update(torch.zeros(4, dtype=torch.long), y)
        tables[reduction] = m.compute().item()
    assert tables["mean"] == pytest.approx((0.25 + 0.5 + 0.75 + 1.0) / 4)
    assert tables["sum"] == pytest.approx(((0.25 + 0.5) + (0.75 + 1.0)) / 2)


def _three_class_model():
    """A linear 3-class model centred on the middle of the image box, so that all three classes occur."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval().requires_grad_(False)
    model[1].bias.copy_(-0.5 * model[1].weight.sum(1))
    return model


def test_ebd2_leave_rule_counts_until_the_prediction_leaves_y():
    model = _three_class_model()
    x = torch.rand(30, 1, 4, 4)
    y = model(x).argmax(1)
    attack = BIM(eps=1.0, step=0.02, steps=40)
    target_rule = EBD2(3, copy.copy(attack))
    leave_rule = EBD2(3, copy.copy(attack), rule="leave")
    until_target, _ = class_iterations(model, x, y, target_rule.attack, 3)
    until_leave, _ = class_iterations(model, x, y, leave_rule.attack, 3)
    valid = until_target >= 0
    assert (until_leave[valid] <= until_target[valid]).all() and (until_leave[valid] < until_target[valid]).any()
    # A direct count: sign steps towards class j, stopping at the first iterate not classified as y.
    for i, j in valid.nonzero()[:12].tolist():
        xi = x[i : i + 1].clone()
        for t in range(41):
            if model(xi).argmax(1).item() != y[i].item():
                break
            xi.requires_grad_(True)
            (grad,) = torch.autograd.grad(-nn.functional.cross_entropy(model(xi), torch.tensor([j])), xi)
            xi = (xi.detach() + 0.02 * grad.sign()).clamp(0, 1)
        assert until_leave[i, j].item() == t, (i, j)
    with pytest.raises(RobustlabError, match="rule=target"):
        EBD2(3, rule="nearest")
