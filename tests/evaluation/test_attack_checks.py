"""The costly checks (suite=checks): a weak attack, masked gradients and a silent success are flagged; a sound
model under a sound attack raises no fail; ``suite=checks`` runs them through ``evaluate.py`` and reports their
time."""

import pytest
import torch

from robustlab.attacks import PGD
from robustlab.evaluate import evaluate
from robustlab.evaluation.attack_checks import improving, tracing
from robustlab.evaluation.checks import Checks
from tests.evaluation.helpers import run_loop
from tests.evaluation.test_checks import Detached
from tests.helpers import make_cfg

COSTLY = (
    "more steps or restarts help",
    "unconstrained attack fails",
    "random noise beats the attack",
    "silent success",
    "zero or NaN gradients along the path",
    "incomplete optimisation",
)


class Forgetful(PGD):
    """PGD that runs its steps and then returns the clean images: every success on its path is silent."""

    def perturb(self, model, x, y, seeds, target=None):
        super().perturb(model, x, y, seeds, target)
        return x.clone()


def _costly(model, batch, attack):
    x, y = batch[0][::4], batch[1][::4]
    loop = run_loop(model, x, y, {"pgd": attack}, {"checks": Checks(costly=True)}, batch_size=25)
    checks = {e["name"]: e for e in loop.results["test"]["checks"]}
    for name in COSTLY:
        print(f"{type(model).__name__} {attack!r}: {name}: {checks[name]['status']} ({checks[name]['evidence']})")
    return {name: checks[name]["status"] for name in COSTLY}, checks


def test_a_sound_attack_on_a_sound_model_raises_no_fail(standard_model, mnist_test_batch):
    statuses, checks = _costly(standard_model, mnist_test_batch, PGD(eps=0.3, step=0.05, steps=10))
    assert len(checks) == 16 and "fail" not in statuses.values(), statuses
    assert statuses["unconstrained attack fails"] == statuses["silent success"] == "pass"
    assert statuses["zero or NaN gradients along the path"] == "pass"
    assert all(checks[name]["seconds"] > 0 for name in COSTLY)


def test_a_weak_attack_is_flagged_by_more_steps_and_incomplete_optimisation(standard_model, mnist_test_batch):
    statuses, _ = _costly(standard_model, mnist_test_batch, PGD(eps=0.3, step=0.01, steps=5))
    assert statuses["more steps or restarts help"] == statuses["incomplete optimisation"] == "fail", statuses


def test_masked_gradients_fail_the_unconstrained_attack(standard_model, mnist_test_batch):
    statuses, checks = _costly(Detached(standard_model), mnist_test_batch, PGD(eps=0.3, step=0.05, steps=10))
    assert statuses["unconstrained attack fails"] == "fail" and checks["unconstrained attack fails"]["fix"]
    assert statuses["zero or NaN gradients along the path"] == "fail"
    assert statuses["more steps or restarts help"] == "pass"  # more of a masked gradient does not help


def test_a_success_dropped_on_the_way_is_silent(standard_model, mnist_test_batch):
    statuses, checks = _costly(standard_model, mnist_test_batch, Forgetful(eps=0.3, step=0.05, steps=10))
    assert statuses["silent success"] == "fail" and "pgd: " in checks["silent success"]["evidence"]


def test_the_path_is_traced_and_a_still_rising_loss_is_incomplete(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:8], mnist_test_batch[1][:8]
    with tracing(standard_model, len(x)) as path:
        PGD(eps=0.3, step=0.01, steps=6, random_start=False)(standard_model, x, y)
        standard_model(x[:3])  # another batch size: not an iterate
    assert 6 <= len(path) <= 8 and all(p.shape == (8, 10) for p in path)
    rising = torch.arange(10.0)[:, None].repeat(1, 2)
    flat = torch.cat([torch.arange(5.0), torch.full((5,), 4.0)])[:, None]
    assert improving(rising).all() and not improving(flat).any()


def test_suite_checks_runs_them_through_evaluate(tmp_path, capsys):
    from tests.regression.cases import checkpoint

    overrides = [f"ckpt={checkpoint('standard')}", "logger=none", "progress=false", "data.test_size=40", "suite=checks"]
    report = evaluate(make_cfg("eval", tmp_path, [*overrides, "attack=[fgsm,pgd_linf]"]))
    names = [e["name"] for e in report["checks"]]
    assert len(names) == 16 and set(COSTLY) <= set(names)
    assert "the costly checks took" in capsys.readouterr().out and report["timings"]["evaluations"]["checks"] > 0
    assert all(e["status"] != "fail" for e in report["checks"]), report["checks"]
    resumed = evaluate(make_cfg("eval", tmp_path, [*overrides, "attack=[fgsm,pgd_linf]", "resume=true"]))
    untimed = [[{k: v for k, v in e.items() if k != "seconds"} for e in r["checks"]] for r in (report, resumed)]
    assert untimed[0] == untimed[1]  # the costly counts come back from the journal


@pytest.mark.parametrize(
    "defense, failed, flagged",
    [
        ("distillation", {"zero or NaN input gradients", "unconstrained attack fails"}, {"black-box beats white-box"}),
        ("fgsm_at", {"more steps or restarts help"}, {"black-box beats white-box"}),
    ],
)
def test_the_gradient_masking_defenses_are_flagged(defense, failed, flagged, mnist_test_batch):
    from robustlab import load_model
    from robustlab.attacks import Square
    from tests.regression.cases import checkpoint

    rows = [20 * c + i for c in range(10) for i in range(10)]  # the first 10 test images of each class
    x, y = mnist_test_batch[0][rows], mnist_test_batch[1][rows]
    attacks = {"pgd": PGD(eps=0.3, step=0.05, steps=10), "square": Square(eps=0.3, n_queries=200)}
    model = load_model(checkpoint(defense)).eval()
    loop = run_loop(model, x, y, attacks, {"checks": Checks(costly=True)}, batch_size=50)
    statuses = {e["name"]: e["status"] for e in loop.results["test"]["checks"]}
    assert all(statuses[name] == "fail" for name in failed), statuses
    assert all(statuses[name] != "pass" for name in flagged), statuses


@pytest.mark.parametrize("name", ["detached", "quantised", "scaled"])
def test_masked_zoo_models_fail_the_costly_and_curve_checks(name, standard_model, mnist_test_batch):
    from robustlab.evaluation.curves import Curves
    from tests.evaluation.test_checks import ZOO

    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    model = ZOO[name][0](standard_model)
    evaluations = {"checks": Checks(costly=True), "curves": Curves()}
    loop = run_loop(model, x, y, {"pgd": PGD(eps=0.3, step=0.05, steps=10)}, evaluations, batch_size=25)
    statuses = {e["name"]: e["status"] for e in loop.results["test"]["checks"]}
    assert statuses["unconstrained attack fails"] == statuses["zero or NaN gradients along the path"] == "fail"
    assert statuses["accuracy does not fall with eps"] != "pass", statuses
