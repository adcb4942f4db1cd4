"""Sound numbers against randomised defenses: attacks decide on several draws, nothing they found is
re-decided on one fresh draw, and the reported accuracy is the expected accuracy over ``eval_draws`` draws."""

import pytest
import torch

import robustlab
from robustlab.attacks import APGD, CW2, FGSM, PGD, SPSA, DeepFool, Square, TransferAttack, adapt
from robustlab.evaluate import evaluate
from robustlab.evaluation import AttackEvaluation, SavedExamples
from robustlab.models.base import DefendedModel
from tests.evaluation.helpers import run_loop
from tests.helpers import make_cfg
from tests.regression.cases import checkpoint


class Quantize(torch.nn.Module):
    """Rounds to 8-bit levels: a non-differentiable preprocessor (zero gradient), so only BPDA gets through."""

    def forward(self, x):
        return torch.round(x * 255) / 255


def _logits(z):
    return torch.stack([-z / 2, z / 2], 1)


class Coin(DefendedModel):
    """Class 1 with probability ``m``, the mean pixel of the 8-bit-rounded image, by construction:
    ``z = 20 (m + u - 1/2)`` with ``u ~ U(-1/2, 1/2)`` per forward pass, class 1 iff ``z > 0``. Randomised and
    preprocessing, so :func:`adapt` nests ``BPDA(EOT(attack))`` (the ``eit`` case); through BPDA its gradient always
    raises ``m``; its expected logits pick class 1 iff ``m > 1/2``."""

    randomized = True

    def __init__(self):
        super().__init__()
        self.quantize = Quantize()

    def preprocessors(self):
        return [self.quantize]

    def forward(self, x):
        m = self.quantize(x).flatten(1).mean(1)
        return _logits(20 * (m + torch.rand_like(m) - 1.0))


class Mean(torch.nn.Module):
    """A deterministic surrogate of :class:`Coin`: class 1 iff ``m > 1/2``."""

    def forward(self, x):
        return _logits(20 * (x.flatten(1).mean(1) - 0.5))


def _coin_data(n=200):
    m0 = torch.linspace(0.05, 0.45, n)
    return m0.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous(), torch.zeros(n, dtype=torch.long)


ATTACKS = {
    "fgsm": FGSM(eps=0.3),
    "pgd": PGD(eps=0.3, step=0.1, steps=5),
    "apgd": APGD(eps=0.3, steps=5, loss="ce"),
    "deepfool": DeepFool(steps=20),
    "cw2": CW2(steps=30, binary_steps=3, c0=1.0, lr=0.05, targeted=False),
    "square": Square(eps=0.3, n_queries=30),
    "spsa": SPSA(eps=0.3, steps=3, samples=4, lr=0.1),
    "transfer": TransferAttack(PGD(eps=0.3, step=0.1, steps=2), surrogate=Mean()),
}


@pytest.fixture(scope="module")
def coin_evaluation(tmp_path_factory):
    torch.manual_seed(0)
    x, y = _coin_data()
    model, out = Coin(), tmp_path_factory.mktemp("coin")
    attacks = {name: adapt(attack, model, eot_samples=10, draws=10) for name, attack in ATTACKS.items()}
    assert repr(attacks["pgd"]).startswith("BPDA(attack=EOT(") and repr(attacks["spsa"]).startswith("EOT(")
    loop = run_loop(model, x, y, attacks, {"attacks": AttackEvaluation(), "save": SavedExamples(out)}, 100, draws=10)
    return loop.results["test"], out, x


@pytest.mark.parametrize("name", list(ATTACKS))
def test_reported_accuracy_is_the_analytic_expectation(coin_evaluation, name):
    results, out, x = coin_evaluation
    saved = torch.load(out / f"{name}.pt", weights_only=True)
    assert torch.equal(saved["x"], x)
    m0, m_adv = x.flatten(1).mean(1).double(), saved["x_adv"].flatten(1).mean(1).double().clamp(0, 1)
    expected = ((1 - m0) * (1 - m_adv)).mean().item()  # clean draw d and adversarial draw d both correct
    worst = ((1 - m0) ** 10 * (1 - m_adv) ** 10).mean().item()  # correct on all 10 draws of both
    r = results["attacks"][name]
    print(
        f"{name}: reported {r['robust_accuracy']:.3f} (worst draw {r['robust_accuracy_worst_draw']:.3f}), "
        f"analytic {expected:.3f} ({worst:.3f})"
    )
    assert r["robust_accuracy"] == pytest.approx(expected, abs=0.03)
    assert r["robust_accuracy_worst_draw"] == pytest.approx(worst, abs=0.03)
    assert results["clean"]["CA"] == pytest.approx((1 - m0).mean().item(), abs=0.03)
    assert results["clean"]["draws"] == 10


def test_fgsm_on_the_expected_gradient_uses_the_whole_budget(coin_evaluation):
    """Every EOT gradient raises the mean pixel, so FGSM ends at ``m0 + eps``."""
    _, out, x = coin_evaluation
    saved = torch.load(out / "fgsm.pt", weights_only=True)
    torch.testing.assert_close(saved["x_adv"], (x + 0.3).clamp(0, 1))


@pytest.mark.parametrize("name", ["deepfool", "cw2"])
def test_successes_are_not_reverted_on_one_noisy_draw(coin_evaluation, name):
    """Minimal-perturbation attacks return the clean image only where they failed, decided on the mean logits of
    10 draws. DeepFool stops just past the expected classifier's boundary (``m = 1/2``), where one noisy draw is a
    coin flip: re-judged on one draw, about half of its successes went back to clean (issue 12: 44% on MNIST)."""
    _, out, x = coin_evaluation
    saved = torch.load(out / f"{name}.pt", weights_only=True)
    reverted = ~(saved["x_adv"] != saved["x"]).flatten(1).any(1)
    print(f"{name}: {int(reverted.sum())} of {len(reverted)} returned as the clean image")
    assert reverted.double().mean() <= 0.1


def test_a_deterministic_model_keeps_one_pass(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:20], mnist_test_batch[1][:20]
    results = run_loop(
        standard_model, x, y, {"fgsm": FGSM(eps=0.2)}, {"attacks": AttackEvaluation()}, draws=10
    ).results["test"]
    assert "draws" not in results["clean"] and "robust_accuracy_worst_draw" not in results["attacks"]["fgsm"]


@pytest.mark.parametrize("defense", ["rt", "rc", "eit"])
def test_randomised_defenses_report_the_50_draw_expectation(tmp_path, defense):
    """A randomised defense trained briefly on MNIST-5k (the regression fixtures), under adaptive DeepFool and PGD:
    the reported robust accuracy equals an independent 50-draw recomputation from the saved images."""
    ckpt = checkpoint(defense)
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [
                f"ckpt={ckpt}",
                "logger=none",
                "progress=false",
                "data.test_size=200",
                "attack=[deepfool,pgd_linf]",
                "attack.pgd_linf.steps=10",
                "attack.deepfool.steps=10",
                "eot_samples=4",
                "eval_draws=50",
                "save_adv=true",
            ],
        )
    )
    model = robustlab.load_model(ckpt)
    torch.manual_seed(1)
    for name in ("deepfool", "pgd_linf"):
        saved = torch.load(tmp_path / "adv" / f"{name}.pt", weights_only=True)
        y = saved["y"]
        with torch.no_grad():
            draws = [(model(saved["x"]).argmax(1) == y) & (model(saved["x_adv"]).argmax(1) == y) for _ in range(50)]
        expected = torch.stack(draws).double().mean().item()
        r = report["attacks"][name]
        print(
            f"{defense} {name}: reported {r['robust_accuracy']:.3f} (worst draw {r['robust_accuracy_worst_draw']:.3f})"
            f", 50-draw recomputation {expected:.3f}"
        )
        assert r["robust_accuracy"] == pytest.approx(expected, abs=0.02)
        assert r["robust_accuracy_worst_draw"] <= r["robust_accuracy"]
    assert report["clean"]["draws"] == 50 and "CA_worst_draw" in report["clean"]
