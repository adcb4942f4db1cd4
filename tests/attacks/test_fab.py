"""FAB-T: agreement with torchattacks' multi-targeted FAB, and the exactness of its projection."""

import numpy as np
import pytest
import torch
import torchattacks

from robustlab import RobustlabError
from robustlab.attacks import FABT
from robustlab.attacks.fab import project_hyperplane_box
from tests.attacks.helpers import accuracy, norms


@pytest.mark.parametrize("norm, eps", [("linf", 0.12), pytest.param("l2", 1.2, marks=pytest.mark.slow)])
def test_fabt_agrees_with_torchattacks(standard_model, mnist_test_batch, norm, eps):
    """Both run without random start (one restart), so both are deterministic."""
    x, y = mnist_test_batch[0][::2], mnist_test_batch[1][::2]
    ours = FABT(eps=eps, norm=norm, steps=15, n_targets=3)
    x_ours = ours(standard_model, x, y)
    peer = torchattacks.FAB(
        standard_model, norm=norm.capitalize(), eps=eps, steps=15, multi_targeted=True, n_classes=4, seed=0
    )
    x_peer = peer(x, y)
    acc_ours, acc_peer = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_peer, y)
    print(f"FAB-T {norm}: robust accuracy ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9
    assert abs(acc_ours - acc_peer) <= 0.02
    assert norms(x_ours - x, "linf" if norm == "linf" else 2).max() <= eps * (1 + 1e-5)
    assert (ours.last_iterations <= 3 * 15).all()


def test_projection_matches_a_linear_program():
    """Linf: the smallest ||d||_inf with w.d = tau and p + d in [0,1], against scipy's LP; L2:
    feasible and no longer than SLSQP's optimum."""
    from scipy.optimize import linprog, minimize

    gen = torch.Generator().manual_seed(1)
    n = 7
    p = torch.rand(8, n, generator=gen, dtype=torch.float64)
    w = torch.randn(8, n, generator=gen, dtype=torch.float64)
    w[0, :3] = 0
    tau = torch.randn(8, generator=gen, dtype=torch.float64)
    for norm in ("linf", "l2"):
        d = project_hyperplane_box(p, w, tau, norm).numpy()
        for pi, wi, ti, di in zip(p.numpy(), w.numpy(), tau.numpy(), d):
            assert (pi + di >= -1e-9).all() and (pi + di <= 1 + 1e-9).all()
            # Linf as an LP over (d, t): minimise t with -t <= d_i <= t.
            lp = linprog(
                c=[0] * n + [1],
                A_eq=[list(wi) + [0]],
                b_eq=[ti],
                A_ub=np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]]),
                b_ub=[0] * (2 * n),
                bounds=[(-a, 1 - a) for a in pi] + [(0, None)],
            )
            if not lp.success:  # the box cannot reach the hyperplane: the corner closest to it
                up = np.sign(wi) * np.sign(ti)
                assert np.allclose(di, np.where(up > 0, 1 - pi, np.where(up < 0, -pi, 0)))
                continue
            assert wi @ di == pytest.approx(ti, abs=1e-9)
            if norm == "linf":
                assert np.abs(di).max() == pytest.approx(lp.fun, abs=1e-9)
            else:
                qp = minimize(
                    lambda z: (z**2).sum(),
                    x0=lp.x[:n],
                    method="SLSQP",
                    bounds=[(-a, 1 - a) for a in pi],
                    constraints=[{"type": "eq", "fun": lambda z: wi @ z - ti}],
                    options={"ftol": 1e-14},
                )
                assert (di**2).sum() <= qp.fun + 1e-7


def test_failures_return_the_clean_image(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:30], mnist_test_batch[1][:30]
    attack = FABT(eps=0.05, steps=5, n_targets=2)
    x_adv = attack(standard_model, x, y)
    assert torch.equal(x_adv[~attack.last_success], x[~attack.last_success])


def test_bad_parameters_are_refused():
    for make in (lambda: FABT(norm="l1"), lambda: FABT(eta=0.5), lambda: FABT(steps=0)):
        with pytest.raises(RobustlabError):
            make()
