"""Agreement with peer implementations (torchattacks, foolbox) on the same model, data and
parameters, with deterministic settings; budgets chosen so robust accuracy lies in (10%, 90%)."""

from unittest import mock

import foolbox
import pytest
import torch
import torchattacks

from robustlab.attacks import BIM, CW2, EAD, ILLC, LLC, MIFGSM, PGD, RFGSM, RLLC, DeepFool
from robustlab.attacks.base import random_like
from tests.attacks.helpers import accuracy, norms


def _peer(cls, model, target=None, **kwargs):
    attack = cls(model, **kwargs)
    if target == "least_likely":
        attack.set_mode_targeted_least_likely(quiet=True)
    elif target is not None:
        attack.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
    return attack


CASES = {
    "BIM": (
        lambda: BIM(eps=0.15, step=0.01, steps=15, keep_successful=False),
        lambda m, t: _peer(torchattacks.BIM, m, eps=0.15, alpha=0.01, steps=15),
    ),
    "MIFGSM": (
        lambda: MIFGSM(eps=0.15, step=0.02, steps=10, keep_successful=False),
        lambda m, t: _peer(torchattacks.MIFGSM, m, eps=0.15, alpha=0.02, steps=10, decay=1.0),
    ),
    "T-MIFGSM": (
        lambda: MIFGSM(eps=0.2, step=0.02, steps=10, targeted=True, keep_successful=False),
        lambda m, t: _peer(torchattacks.MIFGSM, m, t, eps=0.2, alpha=0.02, steps=10, decay=1.0),
    ),
    "LLC": (lambda: LLC(eps=0.3), lambda m, t: _peer(torchattacks.FGSM, m, "least_likely", eps=0.3)),
    "ILLC": (
        lambda: ILLC(eps=0.2, step=0.02, steps=10, keep_successful=False),
        lambda m, t: _peer(torchattacks.BIM, m, "least_likely", eps=0.2, alpha=0.02, steps=10),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_attacks_agree_with_torchattacks(standard_model, mnist_test_batch, name):
    x, y = mnist_test_batch
    make_ours, make_peer = CASES[name]
    ours = make_ours()
    x_ours = ours(standard_model, x, y, seeds=torch.arange(len(x)))
    x_peer = make_peer(standard_model, ours.last_target)(x, y)
    acc_ours, acc_peer = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_peer, y)
    print(f"{name}: robust accuracy ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9, "the comparison needs a budget where robust accuracy is informative"
    assert abs(acc_ours - acc_peer) <= 0.02
    if ours.targeted:
        hit_ours = accuracy(standard_model, x_ours, ours.last_target)
        assert abs(hit_ours - accuracy(standard_model, x_peer, ours.last_target)) <= 0.02
        assert hit_ours == pytest.approx(ours.last_success.float().mean().item())


@pytest.mark.parametrize("cls, name, peer_mode", [(RFGSM, "RFGSM", None), (RLLC, "RLLC", "least_likely")])
def test_random_step_attacks_agree_with_torchattacks(standard_model, mnist_test_batch, cls, name, peer_mode):
    """torchattacks' RFGSM with one step of alpha = eps/2 is R+FGSM with alpha_ratio 0.5; both
    draw the random sign from a normal, so giving it our seeded noise makes the run deterministic."""
    x, y = mnist_test_batch
    eps, seeds = 0.3 if peer_mode else 0.15, torch.arange(len(x))
    x_ours = cls(eps=eps)(standard_model, x, y, seeds=seeds)
    noise = random_like(x, seeds, "normal")
    with mock.patch("torch.randn_like", lambda images: noise):
        x_peer = _peer(torchattacks.RFGSM, standard_model, peer_mode, eps=eps, alpha=eps / 2, steps=1)(x, y)
    acc_ours, acc_peer = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_peer, y)
    print(f"{name}: robust accuracy ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9
    assert abs(acc_ours - acc_peer) <= 0.02


def test_sparse_l1_pgd_agrees_with_foolbox(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    x_ours = PGD(eps=5.0, step=0.5, steps=20, norm="l1", random_start=False, keep_successful=False)(
        standard_model, x, y
    )
    peer = foolbox.attacks.SparseL1DescentAttack(quantile=0.99, abs_stepsize=0.5, steps=20, random_start=False)
    _, x_peer, _ = peer(foolbox.PyTorchModel(standard_model, bounds=(0, 1)), x, y, epsilons=5.0)
    acc_ours, acc_peer = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_peer, y)
    print(f"PGD-L1 (SLIDE): robust accuracy ours {acc_ours:.3f}, foolbox {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9
    assert abs(acc_ours - acc_peer) <= 0.02
    assert norms(x_ours - x, 1).max().item() <= 5.0 * (1 + 1e-5)


def _peer_success(model, x, x_peer, y, target=None):
    """Foolbox returns an all-zero image where it fails; a zero image is no success of the attack."""
    with torch.no_grad():
        pred = model(x_peer).argmax(1)
    hit = pred == target if target is not None else pred != y
    return hit & (x_peer.flatten(1).abs().sum(1) > 0)


def test_deepfool_agrees_with_foolbox_and_is_near_minimal(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::2], mnist_test_batch[1][::2]
    ours = DeepFool(steps=50, overshoot=0.02)
    x_ours = ours(standard_model, x, y)
    peer = foolbox.attacks.L2DeepFoolAttack(steps=50, candidates=None, overshoot=0.02)
    _, x_peer, _ = peer(foolbox.PyTorchModel(standard_model, bounds=(0, 1)), x, y, epsilons=None)
    both = ours.last_success & _peer_success(standard_model, x, x_peer, y)
    med_ours, med_peer = norms(x_ours - x, 2)[both].median().item(), norms(x_peer - x, 2)[both].median().item()
    print(f"DeepFool: median L2 ours {med_ours:.3f}, foolbox {med_peer:.3f}")
    assert ours.last_success.float().mean() >= 0.95 and both.float().mean() >= 0.9
    assert abs(med_ours - med_peer) <= 0.1 * med_peer
    # Defining property: it crosses the boundary, and barely: shrinking the perturbation by 10%
    # brings most examples back to their class.
    clean_ok = ours.last_success & (ours.last_iterations > 0)
    x_back = (x + 0.9 * (x_ours - x))[clean_ok]
    assert accuracy(standard_model, x_back, y[clean_ok]) >= 0.8


def _median_norms(model, x, x_ours, x_peer, y, ours, p):
    both = ours.last_success & _peer_success(model, x, x_peer, y, ours.last_target)
    return both, norms(x_ours - x, p)[both].median().item(), norms(x_peer - x, p)[both].median().item()


@pytest.mark.slow
def test_cw2_agrees_with_foolbox(standard_model, mnist_test_batch):
    """Targeted at DEEPSEC's random wrong class; 5 binary steps x 100 Adam steps (CPU budget)."""
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    ours = CW2(steps=100, binary_steps=5, lr=0.05, c0=1e-2, targeted=True)
    x_ours = ours(standard_model, x, y, seeds=torch.arange(len(x)))
    peer = foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=100, stepsize=0.05, initial_const=1e-2)
    _, x_peer, _ = peer(
        foolbox.PyTorchModel(standard_model, bounds=(0, 1)),
        x,
        foolbox.criteria.TargetedMisclassification(ours.last_target),
        epsilons=None,
    )
    both, med_ours, med_peer = _median_norms(standard_model, x, x_ours, x_peer, y, ours, 2)
    print(
        f"CW2: median L2 ours {med_ours:.3f}, foolbox {med_peer:.3f}; success ours "
        f"{ours.last_success.float().mean():.3f}, both {both.float().mean():.3f}"
    )
    assert both.float().mean() >= 0.7
    assert abs(med_ours - med_peer) <= 0.1 * med_peer


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["EN", "L1"])
def test_ead_agrees_with_foolbox(standard_model, mnist_test_batch, rule):
    x, y = mnist_test_batch[0][::5], mnist_test_batch[1][::5]
    ours = EAD(steps=100, binary_steps=5, lr=0.02, c0=1e-2, decision_rule=rule, targeted=True)
    x_ours = ours(standard_model, x, y, seeds=torch.arange(len(x)))
    peer = foolbox.attacks.EADAttack(
        binary_search_steps=5,
        steps=100,
        initial_stepsize=0.02,
        initial_const=1e-2,
        regularization=1e-3,
        decision_rule=rule,
    )
    _, x_peer, _ = peer(
        foolbox.PyTorchModel(standard_model, bounds=(0, 1)),
        x,
        foolbox.criteria.TargetedMisclassification(ours.last_target),
        epsilons=None,
    )
    both, med_ours, med_peer = _median_norms(standard_model, x, x_ours, x_peer, y, ours, 1)
    print(f"EAD-{rule}: median L1 ours {med_ours:.3f}, foolbox {med_peer:.3f}")
    assert both.float().mean() >= 0.7
    assert abs(med_ours - med_peer) <= 0.1 * med_peer
