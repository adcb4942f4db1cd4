"""The costly checks (suite=checks): a weak attack, masked gradients and a silent success are flagged; a sound
model under a sound attack raises no fail; ``suite=checks`` runs them through ``evaluate.py`` and reports their
time."""

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
    assert len(checks) == 14 and "fail" not in statuses.values(), statuses
    assert statuses["unconstrained attack fails"] == statuses["silent success"] == "pass"
    assert all(checks[name]["seconds"] > 0 for name in COSTLY)


def test_a_weak_attack_is_flagged_by_more_steps_and_incomplete_optimisation(standard_model, mnist_test_batch):
    statuses, _ = _costly(standard_model, mnist_test_batch, PGD(eps=0.3, step=0.01, steps=5))
    assert statuses["more steps or restarts help"] == statuses["incomplete optimisation"] == "fail", statuses


def test_masked_gradients_fail_the_unconstrained_attack(standard_model, mnist_test_batch):
    statuses, checks = _costly(Detached(standard_model), mnist_test_batch, PGD(eps=0.3, step=0.05, steps=10))
    assert statuses["unconstrained attack fails"] == "fail" and checks["unconstrained attack fails"]["fix"]
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
    assert len(names) == 14 and set(COSTLY) <= set(names)
    assert "the costly checks took" in capsys.readouterr().out and report["timings"]["evaluations"]["checks"] > 0
    assert all(e["status"] != "fail" for e in report["checks"]), report["checks"]
    resumed = evaluate(make_cfg("eval", tmp_path, [*overrides, "attack=[fgsm,pgd_linf]", "resume=true"]))
    untimed = [[{k: v for k, v in e.items() if k != "seconds"} for e in r["checks"]] for r in (report, resumed)]
    assert untimed[0] == untimed[1]  # the costly counts come back from the journal
