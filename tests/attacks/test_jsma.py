"""JSMA against torchattacks' JSMA (the DEEPSEC port), plus its own budget and batching rules."""

import math

import pytest
import torch
import torchattacks

from robustlab import RobustlabError
from robustlab.attacks import JSMA


def _peer(model, target, n_features, gamma=0.1):
    """torchattacks' JSMA on the same targets, with the same iteration cap (it rounds up, we down)."""
    pairs = math.floor(n_features * gamma / 2)
    peer = torchattacks.JSMA(model, theta=1.0, gamma=2 * pairs / n_features)
    peer.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
    return peer


def _l0(delta):
    return (delta.flatten(1) != 0).sum(1).float()


def test_jsma_equals_torchattacks_pixel_for_pixel(standard_model, mnist_test_batch):
    """Same saliency map, pair choice, domain and stopping: the same pixels change."""
    x, y = mnist_test_batch[0][7::40], mnist_test_batch[1][7::40]
    attack = JSMA()
    x_ours = attack(standard_model, x, y, seeds=torch.arange(len(x)))
    x_peer = _peer(standard_model, attack.last_target, x[0].numel())(x, y)
    with torch.no_grad():
        peer_success = standard_model(x_peer).argmax(1) == attack.last_target
    assert torch.equal(attack.last_success, peer_success) and attack.last_success.any()
    ok = attack.last_success
    assert torch.equal(x_ours[ok], x_peer[ok])
    assert torch.equal(x_ours[~ok], x[~ok])
    assert torch.equal(attack.last_iterations[ok], (_l0(x_ours - x)[ok] / 2).long())


@pytest.mark.slow
def test_jsma_agrees_with_torchattacks_on_100_images(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::2], mnist_test_batch[1][::2]
    attack = JSMA()
    x_ours = attack(standard_model, x, y, seeds=torch.arange(len(x)))
    x_peer = _peer(standard_model, attack.last_target, x[0].numel())(x, y)
    with torch.no_grad():
        peer_success = standard_model(x_peer).argmax(1) == attack.last_target
    ours, theirs = attack.last_success.float().mean().item(), peer_success.float().mean().item()
    l0_ours, l0_peer = _l0(x_ours - x)[attack.last_success].mean(), _l0(x_peer - x)[peer_success].mean()
    print(f"JSMA success ours {ours:.3f}, torchattacks {theirs:.3f}; L0 ours {l0_ours:.1f}, torchattacks {l0_peer:.1f}")
    assert abs(ours - theirs) <= 0.02
    assert abs(l0_ours - l0_peer) <= 0.1 * l0_peer


def test_jsma_budget_batching_and_decreasing_mode(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][3::25], mnist_test_batch[1][3::25]
    seeds = torch.arange(100, 100 + len(x))
    attack = JSMA(gamma=0.05)
    x_adv = attack(standard_model, x, y, seeds=seeds)
    cap = math.floor(x[0].numel() * 0.05 / 2)
    assert (_l0(x_adv - x) <= 2 * cap).all() and (attack.last_iterations <= cap).all()
    # Only increases, to exactly 1 where theta is 1.
    changed = x_adv != x
    assert (x_adv[changed] == 1).all()
    # Each example runs on its own: half the batch gives the same images.
    half = JSMA(gamma=0.05, budget=784 * 784)(standard_model, x[1::2], y[1::2], seeds=seeds[1::2])
    assert torch.equal(half, x_adv[1::2])
    darken = JSMA(theta=-1.0, gamma=0.05)
    x_dark = darken(standard_model, x, y, seeds=seeds)
    assert (x_dark <= x).all() and (x_dark[x_dark != x] == 0).all()
    assert darken.last_success.any()


@pytest.mark.parametrize("kwargs", [{"theta": 0.0}, {"theta": 2.0}, {"gamma": 0.0}, {"gamma": 1.5}, {"budget": 0}])
def test_jsma_bad_parameters_are_one_line_errors(kwargs):
    with pytest.raises(RobustlabError) as err:
        JSMA(**kwargs)
    assert "fix:" in str(err.value) and "\n" not in str(err.value)
