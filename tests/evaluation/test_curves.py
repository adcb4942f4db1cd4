"""Robustness curves (suite=curves): each eps value equals a separate evaluation at that eps, each steps value a
separate run of that many steps, minimal-norm curves follow the attack's own norms, and masked gradients are flagged
by the accuracy-against-eps check."""

import pytest
import torch

from robustlab.attacks import PGD, DeepFool
from robustlab.attacks.base import lp_norm
from robustlab.evaluate import evaluate
from robustlab.evaluation.curves import Curves, budgets
from tests.evaluation.helpers import run_loop
from tests.evaluation.test_checks import Detached
from tests.helpers import make_cfg

N = 100


def _evaluate(tmp_path, name, overrides):
    from tests.regression.cases import checkpoint

    base = [f"ckpt={checkpoint('pgd_at')}", "logger=none", "progress=false", f"data.test_size={N}"]
    return evaluate(make_cfg("eval", tmp_path / name, [*base, "attack=[pgd_linf]", *overrides]))


def test_each_eps_value_equals_a_separate_evaluation_at_that_eps(tmp_path):
    report = _evaluate(tmp_path, "curve", ["suite=curves"])
    curve = report["curves"]["eps"]["pgd_linf"]
    eps, step = 0.3, 0.01  # the MNIST threat budget of pgd_linf
    assert curve["eps"] == [0.0, *budgets(eps, 8, 2.0)] and curve["method"] == "rerun"
    assert curve["robust_accuracy"][0] == report["clean"]["CA"]
    acc = curve["robust_accuracy"]
    assert all(a >= b for a, b in zip(acc, acc[1:])) and acc[1] > acc[-1]
    assert curve["probed"] > 0 and curve["disagree"] == 0
    for budget, value in zip(curve["eps"][1:], acc[1:]):
        scale = budget / eps
        separate = _evaluate(
            tmp_path, f"eps{budget}", [f"attack.pgd_linf.eps={budget}", f"attack.pgd_linf.step={step * scale}"]
        )
        assert separate["attacks"]["pgd_linf"]["robust_accuracy"] == value, budget
    names = {e["name"]: e for e in report["checks"]}
    assert names["accuracy does not fall with eps"]["status"] == "pass"
    assert "accuracy still falls with steps" in names


def test_each_steps_value_equals_a_separate_run_of_that_many_steps(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    attack = PGD(eps=0.15, step=0.01, steps=12)
    loop = run_loop(standard_model, x, y, {"pgd": attack}, {"curves": Curves()}, batch_size=25)
    curve = loop.results["test"]["curves"]["steps"]["pgd"]
    assert curve["steps"] == list(range(13))
    for t in (1, 4, 12):
        seeds = torch.arange(len(x))
        out = PGD(eps=0.15, step=0.01, steps=t).run(standard_model, x, y, seeds=seeds)
        separate = ((standard_model(x).argmax(1) == y) & ~out.success).float().mean().item()
        assert curve["robust_accuracy"][t] == pytest.approx(separate, abs=1e-6), t


def test_a_minimal_norm_attack_gives_its_curve_from_its_norms(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::5], mnist_test_batch[1][::5]
    curves = Curves(budgets={"l2": 1.0})
    loop = run_loop(standard_model, x, y, {"deepfool": DeepFool(steps=20)}, {"curves": curves}, batch_size=20)
    curve = loop.results["test"]["curves"]["eps"]["deepfool"]
    assert curve["method"] == "minimal norm" and curve["norm"] == "l2" and curve["eps"][-1] == 2.0
    out = DeepFool(steps=20).run(standard_model, x, y)
    correct = standard_model(x).argmax(1) == y
    size = lp_norm(out.x_adv - x, "l2")
    for e, value in zip(curve["eps"], curve["robust_accuracy"]):
        expected = (correct & ~(out.success & (size <= e * (1 + 1e-6)))).float().mean().item()
        assert value == pytest.approx(expected, abs=1e-6), e
    assert "deepfool" in loop.results["test"]["curves"]["steps"]


def test_masked_gradients_leave_the_curve_flat_and_fail_the_eps_check(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    attack = PGD(eps=0.3, step=0.05, steps=10, random_start=False)
    loop = run_loop(Detached(standard_model), x, y, {"pgd": attack}, {"curves": Curves()}, batch_size=25)
    results = loop.results["test"]
    acc = results["curves"]["eps"]["pgd"]["robust_accuracy"]
    assert acc[-1] == acc[4] > 0.5
    check = {e["name"]: e for e in results["checks"]}["accuracy does not fall with eps"]
    assert check["status"] == "fail" and check["fix"], check
