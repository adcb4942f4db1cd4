"""BLB has no standard peer: it must reach its targets with less L2 than a targeted sign-gradient
attack, and each example must run its own L-BFGS-B and binary search."""

import pytest
import torch

from robustlab import RobustlabError
from robustlab.attacks import BLB, MIFGSM
from tests.attacks.helpers import norms


def test_blb_hits_targets_with_less_l2_than_targeted_mifgsm(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][5::25], mnist_test_batch[1][5::25]
    blb = BLB(c0=1.0, steps=30, binary_steps=4)
    x_blb = blb(standard_model, x, y, seeds=torch.arange(len(x)))
    target = blb.last_target
    baseline = MIFGSM(eps=0.3, step=0.05, steps=10, targeted=True)
    x_base = baseline(standard_model, x, y, target=target)
    with torch.no_grad():
        hit = standard_model(x_blb).argmax(1) == target
    assert torch.equal(hit, blb.last_success)
    assert blb.last_success.float().mean() >= baseline.last_success.float().mean() - 1e-6
    both = blb.last_success & baseline.last_success
    l2_blb, l2_base = norms(x_blb - x, 2), norms(x_base - x, 2)
    print(
        f"BLB success {blb.last_success.float().mean():.2f}, median L2 {l2_blb[both].median():.2f}; "
        f"T-MI-FGSM success {baseline.last_success.float().mean():.2f}, median L2 {l2_base[both].median():.2f}"
    )
    assert both.sum() >= 4 and (l2_blb[both] < l2_base[both]).all()
    assert x_blb.min() >= 0 and x_blb.max() <= 1
    assert torch.equal(x_blb[~blb.last_success], x[~blb.last_success])
    assert (blb.last_iterations[blb.last_success] > 0).all()


def test_blb_constants_are_per_example(standard_model, mnist_test_batch):
    """The batch result equals the per-example results: no constant or curvature is shared."""
    x, y = mnist_test_batch[0][11::50], mnist_test_batch[1][11::50]
    target = (y + 1) % 10
    attack = BLB(steps=15, binary_steps=3)
    whole = attack(standard_model, x, y, target=target)
    success, iters = attack.last_success, attack.last_iterations
    for i in range(len(x)):
        alone = attack(standard_model, x[i : i + 1], y[i : i + 1], target=target[i : i + 1])
        assert torch.equal(alone, whole[i : i + 1])
        assert attack.last_success.item() == success[i].item() and attack.last_iterations.item() == iters[i].item()


def test_blb_keeps_the_smallest_successful_example_over_binary_steps(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:3], mnist_test_batch[1][:3]
    target = (y + 5) % 10
    one = BLB(steps=15, binary_steps=1, c0=100.0)(standard_model, x, y, target=target)
    attack = BLB(steps=15, binary_steps=3, c0=100.0)
    more = attack(standard_model, x, y, target=target)
    assert attack.last_success.all()
    assert (norms(more - x, 2) <= norms(one - x, 2) + 1e-6).all()


@pytest.mark.parametrize("kwargs", [{"c0": -1.0}, {"binary_steps": 0}, {"steps": 0}])
def test_blb_bad_parameters_are_one_line_errors(kwargs):
    with pytest.raises(RobustlabError) as err:
        BLB(**kwargs)
    assert "fix:" in str(err.value) and "\n" not in str(err.value)
