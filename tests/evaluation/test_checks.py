"""The cheap evaluation checks on a zoo of models that each break an evaluation in a known way, and on sound
models, which raise no fail."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD, Square, adapt
from robustlab.evaluate import evaluate
from robustlab.evaluation.checks import Checks
from robustlab.models.base import DefendedModel
from tests.evaluation.helpers import run_loop
from tests.helpers import make_cfg


class Softmax(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return F.softmax(self.net(x), 1)


class Noisy(Softmax):
    """Gaussian input noise at inference, undeclared."""

    def forward(self, x):
        return self.net((x + 0.25 * torch.randn_like(x)).clamp(0, 1))


class DeclaredNoisy(DefendedModel):
    randomized = True

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x + 0.25 * torch.randn_like(x)).clamp(0, 1))


class Detached(Softmax):
    """A gradient-killing layer: the input is detached."""

    def forward(self, x):
        return self.net(x.detach())


class Quantised(Softmax):
    """Input quantisation to 8 levels without a straight-through path (and not declared)."""

    def forward(self, x):
        return self.net(torch.round(x * 7) / 7)


class Scaled(Softmax):
    """Logits scaled by 1e3 (a saturated softmax, as defensive distillation gives)."""

    def forward(self, x):
        return 1e3 * self.net(x)


class TrainBatchNorm(Softmax):
    """A BatchNorm layer that stays in train mode (batch statistics) at inference."""

    def __init__(self, net):
        super().__init__(net)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        self.bn.train()
        return self.net(self.bn(x).clamp(0, 1))


class InnerSteps(Softmax):
    """A forward that runs its own gradient steps on the input (a purifier that optimises)."""

    def forward(self, x):
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            for _ in range(2):
                (g,) = torch.autograd.grad(self.net(z).logsumexp(1).sum(), z)
                z = (z + 0.01 * g.sign()).clamp(0, 1).detach().requires_grad_(True)
        return self.net(z.detach())


ZOO = {  # model: the checks it must fail or warn
    "softmax": (Softmax, {"probability outputs"}),
    "noisy": (Noisy, {"randomised outputs"}),
    "detached": (Detached, {"zero or NaN input gradients", "black-box beats white-box"}),
    "quantised": (Quantised, {"zero or NaN input gradients", "black-box beats white-box"}),
    "scaled": (Scaled, {"zero or NaN input gradients"}),
    "train_batchnorm": (TrainBatchNorm, {"batch dependence"}),
    "inner_steps": (InnerSteps, {"optimisation inside the forward"}),
}


def _checks(model, mnist_test_batch, draws=1):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    # PGD, not FGSM: a single step misses enough examples of a sound model for Square to beat it (>= 5%)
    attacks = {"pgd": PGD(eps=0.3, step=0.05, steps=10), "square": Square(eps=0.3, n_queries=200)}
    attacks = {k: adapt(a, model, eot_samples=4, draws=4) for k, a in attacks.items()}
    loop = run_loop(model, x, y, attacks, {"checks": Checks()}, batch_size=25, draws=draws)
    return {e["name"]: e for e in loop.results["test"]["checks"]}


@pytest.mark.parametrize("name", list(ZOO))
def test_each_broken_model_raises_its_check(name, standard_model, mnist_test_batch):
    cls, expected = ZOO[name]
    checks = _checks(cls(standard_model), mnist_test_batch)
    flagged = {k for k, e in checks.items() if e["status"] != "pass"}
    for k, e in checks.items():
        print(f"{name}: {k}: {e['status']} ({e['evidence']})")
    assert expected <= flagged, (expected, flagged)
    assert all(checks[k]["fix"] for k in flagged)


def test_a_sound_model_raises_no_fail(standard_model, mnist_test_batch):
    checks = _checks(standard_model, mnist_test_batch)
    assert len(checks) == 10 and all(e["status"] in ("pass", "warn") for e in checks.values()), checks
    assert {k for k, e in checks.items() if e["status"] == "fail"} == set()


def test_a_declared_randomised_model_scored_on_draws_passes_the_randomness_check(standard_model, mnist_test_batch):
    assert _checks(DeclaredNoisy(standard_model), mnist_test_batch, draws=4)["randomised outputs"]["status"] == "pass"
    assert _checks(DeclaredNoisy(standard_model), mnist_test_batch, draws=1)["randomised outputs"]["status"] == "warn"


def test_every_evaluation_reports_its_checks_and_summary(tmp_path, capsys):
    from tests.regression.cases import checkpoint

    overrides = [f"ckpt={checkpoint('pgd_at')}", "logger=none", "progress=false", "data.test_size=50"]
    report = evaluate(make_cfg("eval", tmp_path, overrides))
    statuses = [e["status"] for e in report["checks"]]
    assert len(statuses) == 10 and "fail" not in statuses, report["checks"]
    assert "checks: " in capsys.readouterr().out and "checks" in report["timings"]["evaluations"]
    off = evaluate(make_cfg("eval", tmp_path / "off", [*overrides, "evaluations.checks=null"]))
    assert "checks" not in off


def test_an_attack_that_cannot_reach_its_eps_is_flagged(standard_model, mnist_test_batch):
    from robustlab.attacks import PGD

    x, y = mnist_test_batch[0][:20], mnist_test_batch[1][:20]
    attacks = {"short": PGD(eps=0.3, step=0.01, steps=10), "long": PGD(eps=0.3, step=0.01, steps=40)}
    checks = run_loop(standard_model, x, y, attacks, {"checks": Checks()}).results["test"]["checks"]
    budget = next(e for e in checks if e["name"] == "step budget")
    assert budget["status"] == "warn" and "short:" in budget["evidence"] and "long:" not in budget["evidence"]


def test_transfer_examples_that_fool_the_surrogate_but_not_the_model_are_flagged(standard_model, mnist_test_batch):
    from robustlab import load_model
    from robustlab.attacks import TransferAttack
    from tests.regression.cases import checkpoint

    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    robust = load_model(checkpoint("pgd_at")).eval()

    def transfer(target):
        attack = TransferAttack(PGD(eps=0.15, step=0.02, steps=10), surrogate=standard_model)
        loop = run_loop(target, x, y, {"transfer": attack}, {"checks": Checks()}, batch_size=25)
        return {e["name"]: e for e in loop.results["test"]["checks"]}["transfer failure"]

    failed = transfer(robust)  # the standard model's examples mostly do not fool a PGD-AT model
    assert failed["status"] == "warn" and failed["fix"], failed
    assert transfer(standard_model)["status"] == "pass"  # the surrogate itself: every example transfers
