"""APGD and APGD-T: agreement with torchattacks on the same random starts, APGD-L1 against PGD-L1,
the L1-ball-and-box projection, and per-example independence of the early stop."""

from unittest import mock

import pytest
import torch
import torchattacks

from robustlab import RobustlabError
from robustlab.attacks import APGD, APGDT, PGD
from robustlab.attacks.apgd import project_l1_box
from robustlab.attacks.base import random_like
from tests.attacks.helpers import accuracy, norms


def _robust(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


@pytest.mark.parametrize("loss, norm, eps", [("ce", "linf", 0.1), ("dlr", "linf", 0.1), ("ce", "l2", 1.5)])
def test_apgd_agrees_with_torchattacks(standard_model, mnist_test_batch, loss, norm, eps):
    """Same parameters and the same random start (torchattacks draws it with torch.rand / randn on
    the correctly classified points; we hand it our per-example noise), so the runs coincide."""
    x, y = mnist_test_batch
    seeds = torch.arange(len(x))
    ours = APGD(eps=eps, norm=norm, loss=loss, steps=20)
    x_ours = ours(standard_model, x, y, seeds=seeds)
    keep = _robust(standard_model, x, y)
    noise = random_like(x[keep], seeds[keep], "uniform" if norm == "linf" else "normal")
    patch = ("torch.rand", lambda *a, **k: noise) if norm == "linf" else ("torch.randn", lambda *a, **k: noise)
    peer = torchattacks.APGD(standard_model, norm=norm.capitalize(), eps=eps, steps=20, loss=loss, seed=0)
    with mock.patch(*patch):
        x_peer = peer(x, y)
    acc_ours, acc_peer = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_peer, y)
    print(f"APGD-{loss.upper()} {norm}: robust accuracy ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9
    assert abs(acc_ours - acc_peer) <= 0.02
    assert norms(x_ours - x, "linf" if norm == "linf" else 2).max() <= eps * (1 + 1e-5)
    assert torch.equal(ours.last_success, ~_robust(standard_model, x_ours, y))
    # APGD-CE is no weaker than PGD with as many steps of a hand-tuned size.
    if loss == "ce" and norm == "linf":
        pgd = PGD(eps=eps, step=eps / 8, steps=20)
        assert acc_ours <= accuracy(standard_model, pgd(standard_model, x, y, seeds=seeds), y) + 0.01


def test_apgdt_agrees_with_torchattacks(standard_model, mnist_test_batch):
    """Three runner-up targets, 10 steps each. The peer's random start comes from its own seed; over
    the 200 images this moves robust accuracy by at most a point or two (measured: identical)."""
    x, y = mnist_test_batch
    ours = APGDT(eps=0.1, steps=10, n_targets=3)
    x_ours = ours(standard_model, x, y, seeds=torch.arange(len(x)))
    x_peer = torchattacks.APGDT(standard_model, eps=0.1, steps=10, n_classes=4, seed=0)(x, y)
    acc_ours, acc_peer = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_peer, y)
    print(f"APGD-T: robust accuracy ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9
    assert abs(acc_ours - acc_peer) <= 0.02
    total = 3 * 10
    assert (ours.last_iterations <= total).all() and (ours.last_iterations[~ours.last_success] == total).all()


def test_apgd_l1_is_sparse_feasible_and_at_least_as_strong_as_pgd_l1(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::2], mnist_test_batch[1][::2]
    eps, seeds = 8.0, torch.arange(len(x))
    x_ours = APGD(eps=eps, norm="l1", steps=20)(standard_model, x, y, seeds=seeds)
    x_pgd = PGD(eps=eps, step=1.0, steps=20, norm="l1")(standard_model, x, y, seeds=seeds)
    acc_ours, acc_pgd = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_pgd, y)
    print(f"APGD-L1: robust accuracy {acc_ours:.3f}, PGD-L1 (SLIDE) {acc_pgd:.3f}")
    assert acc_ours <= acc_pgd + 0.02 and acc_ours < 0.9  # within the 2-point agreement tolerance
    assert norms(x_ours - x, 1).max() <= eps * (1 + 1e-5)
    assert x_ours.min() >= 0 and x_ours.max() <= 1


def test_apgd_l1_large_reps_runs_its_schedule(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:40], mnist_test_batch[1][:40]
    attack = APGD(eps=8.0, norm="l1", steps=10, large_reps=True)
    x_adv = attack(standard_model, x, y, seeds=torch.arange(40))
    assert norms(x_adv - x, 1).max() <= 8.0 * (1 + 1e-5)
    assert (attack.last_iterations[~attack.last_success] == 10).all()


def test_l1_box_projection_is_the_euclidean_projection():
    """Against scipy's SLSQP on small problems: feasible, and no feasible point is closer."""
    from scipy.optimize import minimize

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 8, generator=gen, dtype=torch.float64)
    v = 2 * torch.randn(6, 8, generator=gen, dtype=torch.float64)
    proj = project_l1_box(v, x, 1.5, iterations=60)
    for xi, vi, pi in zip(x.numpy(), v.numpy(), proj.numpy()):
        assert abs(pi).sum() <= 1.5 + 1e-9 and (xi + pi >= -1e-12).all() and (xi + pi <= 1 + 1e-12).all()
        # Split d = p - q with p, q >= 0 to make the L1 constraint smooth.
        res = minimize(
            lambda z: ((z[:8] - z[8:] - vi) ** 2).sum(),
            x0=[0.0] * 16,
            method="SLSQP",
            bounds=[(0, 1 - a) for a in xi] + [(0, a) for a in xi],
            constraints=[{"type": "ineq", "fun": lambda z: 1.5 - z.sum()}],
            options={"ftol": 1e-12},
        )
        assert ((pi - vi) ** 2).sum() <= res.fun + 1e-6


def test_results_do_not_depend_on_the_batch(standard_model, mnist_test_batch):
    """Per-example seeds and step sizes, and the per-example early stop, make each example's result
    independent of the rest of the batch, up to the last bits of CPU kernels that differ for batches
    of 1-3 images (which can flip the sign of a near-zero gradient entry late in a run)."""
    x, y = mnist_test_batch[0][:60], mnist_test_batch[1][:60]
    seeds = torch.arange(100, 160)
    attack = APGD(eps=0.12, steps=8, restarts=2)
    whole = attack(standard_model, x, y, seeds=seeds)
    success = attack.last_success
    part = attack(standard_model, x[25:], y[25:], seeds=seeds[25:])
    same = (part - whole[25:]).flatten(1).abs().amax(1) <= 1e-5
    assert (attack.last_success != success[25:]).sum() <= 1 and same.float().mean() >= 0.75
    assert same[~attack.last_success].all()


def test_eot_averages_gradients(standard_model, mnist_test_batch):
    """On a deterministic model the EOT average is the plain gradient."""
    x, y = mnist_test_batch[0][:20], mnist_test_batch[1][:20]
    one = APGD(eps=0.1, steps=5)(standard_model, x, y, seeds=torch.arange(20))
    two = APGD(eps=0.1, steps=5, eot_iter=2)(standard_model, x, y, seeds=torch.arange(20))
    assert torch.allclose(one, two, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: APGD(loss="hinge"),
        lambda: APGD(norm="l3"),
        lambda: APGD(eps=-1),
        lambda: APGD(rho=0),
        lambda: APGD(large_reps=True),
        lambda: APGDT(n_targets=0),
    ],
)
def test_bad_parameters_are_refused(make):
    with pytest.raises(RobustlabError) as err:
        make()
    assert "fix:" in str(err.value) and "\n" not in str(err.value)


def test_random_starts_are_seeded_per_example(standard_model, mnist_test_batch):
    """The first restart's random start comes from each example's seed (it once fell back to the global RNG),
    so results are repeatable and do not depend on the batch an example is attacked in."""
    x, y = mnist_test_batch[0][::10], mnist_test_batch[1][::10]
    seeds = torch.arange(100, 120)
    attack = APGD(eps=0.2, steps=5)
    whole = attack(standard_model, x, y, seeds=seeds)
    torch.manual_seed(123)
    assert torch.equal(attack(standard_model, x, y, seeds=seeds), whole)
    assert torch.equal(attack(standard_model, x[7:], y[7:], seeds=seeds[7:]), whole[7:])
