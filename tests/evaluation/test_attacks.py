"""The attack evaluation inside a real Trainer: exact counts, the inference-mode guard, attack-utility metrics
per attack, AAW/AAB by attack kind, the batch record and saved adversarial examples."""

import pytest
import torch

from robustlab import RobustlabError
from robustlab.attacks import FGSM, ILLC, PGD, Attack
from robustlab.attacks.base import random_like
from robustlab.evaluation import AttackEvaluation, Evaluation, SavedExamples
from robustlab.metrics import ACAC, RGB, ALDp
from robustlab.metrics.functional import lp_distortion
from robustlab.success import attack_success
from tests.evaluation.helpers import run_loop


def _test(model, x, y, inference_mode=False, batch_size=16, attacks=None, **kwargs):
    attacks = attacks or {"fgsm": FGSM(eps=0.1), "pgd": PGD(eps=0.1, step=0.02, steps=5)}
    loop = run_loop(model, x, y, attacks, {"attacks": AttackEvaluation(**kwargs)}, batch_size, inference_mode)
    return loop.results["test"]


def test_results_match_a_direct_computation(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    results = _test(standard_model, x, y)
    with torch.no_grad():
        clean = standard_model(x).argmax(1) == y
        adv = standard_model(FGSM(eps=0.1)(standard_model, x, y)).argmax(1) == y
    fgsm = results["attacks"]["fgsm"]
    assert results["clean"] == {"CA": clean.sum().item() / 200, "n_samples": 200}
    assert fgsm["robust_accuracy"] == (clean & adv).sum().item() / 200
    assert fgsm["MR"] == (clean & ~adv).sum().item() / clean.sum().item()
    worst = results["worst_case"]["robust_accuracy"]
    assert worst <= min(r["robust_accuracy"] for r in results["attacks"].values())


def test_batch_size_does_not_change_results(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:49], mnist_test_batch[1][:49]  # 7 batches of 7, or one of 49: no 1-image batch
    results = [
        _test(standard_model, x, y, batch_size=b, attacks={"pgd": PGD(eps=0.1, step=0.02, steps=5)}) for b in (7, 49)
    ]
    results = [{k: v for k, v in r["attacks"]["pgd"].items() if k not in ("seconds", "CC")} for r in results]
    assert results[0] == results[1]


def test_attack_under_inference_mode_fails_clearly(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    with pytest.raises(RobustlabError, match="inference_mode"):
        _test(standard_model, x[:16], y[:16], inference_mode=True)


def test_targeted_mr_counts_hits_on_the_target(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:64], mnist_test_batch[1][:64]
    attack = ILLC(eps=0.2, step=0.02, steps=10)
    results = _test(standard_model, x, y, batch_size=64, attacks={"illc": attack})
    with torch.no_grad():
        clean = standard_model(x).argmax(1) == y
        x_adv = ILLC(eps=0.2, step=0.02, steps=10)(standard_model, x, y)
        hit = standard_model(x_adv).argmax(1) == attack.last_target
        wrong = standard_model(x_adv).argmax(1) != y
    assert results["attacks"]["illc"]["MR"] == (clean & hit).sum().item() / clean.sum().item()
    assert (clean & hit).sum() < (clean & wrong).sum(), "the targeted MR must not count untargeted misses"


class _Noise(Attack):
    """A gradient-free attack: random-sign noise, seeded per example."""

    kind = "blackbox"

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def perturb(self, model, x, y, seeds, target=None):
        return (x + self.eps * (2 * random_like(x, seeds) - 1).sign()).clamp(0, 1)


class _Probe(Evaluation):
    """Keeps every batch record it is handed."""

    sections = ()

    def setup(self, context):
        self.seen = []

    def update(self, record):
        self.seen.append(record)

    def results(self):
        return None


def test_metrics_per_attack_match_a_direct_computation(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:60], mnist_test_batch[1][:60]
    attacks = {"fgsm": FGSM(eps=0.15), "noise": _Noise(eps=0.5)}
    metrics = {"acac": ACAC(), "aldp": ALDp(), "aldp_raw": ALDp(normalized=False), "rgb": RGB(radius=0.5)}
    probe = _Probe()
    loop = run_loop(standard_model, x, y, attacks, {"attacks": AttackEvaluation(metrics), "probe": probe}, 25)
    results = loop.results["test"]["attacks"]  # batches of 25, 25, 10
    with torch.no_grad():
        clean_logits = standard_model(x)
    for name, attack in attacks.items():
        x_adv = attack(standard_model, x, y, seeds=torch.arange(60))
        with torch.no_grad():
            adv_logits = standard_model(x_adv)
        success = attack_success(clean_logits.argmax(1), adv_logits.argmax(1), y)
        assert 0 < success.sum() < 60
        r = results[name]
        key, other = ("AAW", "AAB") if name == "fgsm" else ("AAB", "AAW")
        assert r[key] == r["robust_accuracy"] and other not in r
        expected = {
            "ACAC": ACAC(),
            "ALDp_aldp": ALDp(),
            "ALDp_aldp_raw": ALDp(normalized=False),
            "RGB": RGB(radius=0.5),
        }
        for k, metric in expected.items():
            metric.update(standard_model, x, x_adv, y, clean_logits, adv_logits)
            value = metric.compute()
            value = {s: v.item() for s, v in value.items()} if isinstance(value, dict) else value.item()
            assert r[k] == pytest.approx(value, rel=1e-6), (name, k)  # float32 logits of other batch sizes
        seen = [b.attacks[name] for b in probe.seen]
        torch.testing.assert_close(torch.cat([s.x_adv for s in seen]), x_adv)
        torch.testing.assert_close(torch.cat([s.logits for s in seen]), adv_logits)
        assert torch.equal(torch.cat([s.success for s in seen]), adv_logits.argmax(1) != y)
        assert all(s.seconds > 0 for s in seen)
    assert torch.equal(torch.cat([b.idx for b in probe.seen]), torch.arange(60))
    assert torch.equal(torch.cat([b.seeds for b in probe.seen]), torch.arange(60))
    torch.testing.assert_close(torch.cat([b.clean_logits for b in probe.seen]), clean_logits)


def test_an_attack_of_unknown_kind_is_refused(standard_model, mnist_test_batch):
    attack = FGSM(eps=0.1)
    attack.kind = "greybox"
    with pytest.raises(RobustlabError, match="kind 'greybox'"):
        _test(standard_model, mnist_test_batch[0][:8], mnist_test_batch[1][:8], attacks={"fgsm": attack})


def test_saved_examples_hold_every_sample_once(standard_model, mnist_test_batch, tmp_path):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]  # 50 samples, 2 per class
    attacks = {"fgsm": FGSM(eps=0.15), "illc": ILLC(eps=0.3, step=0.05, steps=10)}
    evaluations = {"attacks": AttackEvaluation({"aldp": ALDp()}), "save": SavedExamples(tmp_path / "adv")}
    results = run_loop(standard_model, x, y, attacks, evaluations, 16).results["test"]["attacks"]
    for name in attacks:
        saved = torch.load(tmp_path / "adv" / f"{name}.pt", weights_only=True)
        assert set(saved) == {"x", "x_adv", "y", "success", "clean_pred", "adv_pred", "idx"} | (
            {"target"} if name == "illc" else set()
        )
        assert torch.equal(saved["idx"], torch.arange(50)) and torch.equal(saved["x"], x) and torch.equal(saved["y"], y)
        fooled = saved["adv_pred"] == saved["target"] if name == "illc" else saved["adv_pred"] != saved["y"]
        clean_correct = saved["clean_pred"] == saved["y"]
        assert torch.equal(saved["success"], clean_correct & fooled) and 0 < saved["success"].sum() < 50
        assert results[name]["MR"] == saved["success"].sum().item() / clean_correct.sum().item()
        ok = saved["success"]
        recomputed = lp_distortion(saved["x"][ok], saved["x_adv"][ok]).mean(0).tolist()
        assert [results[name]["ALDp"][k] for k in ("L0", "L2", "Linf")] == pytest.approx(recomputed, rel=1e-9)


def test_cost_and_l0_of_minimal_perturbation_attacks(tmp_path):
    """CC is in every attack entry (seconds per sample); ALD L0 counts changed 8-bit values, which an independent
    count from the saved examples reproduces (the tanh round trip of CW2 and DeepFool's dense sub-grey-level
    changes once made L0 about 1 for both)."""
    from robustlab.evaluate import evaluate
    from tests.helpers import make_cfg
    from tests.regression.cases import checkpoint

    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [
                f"ckpt={checkpoint('standard')}",
                "logger=none",
                "progress=false",
                "data.test_size=40",
                "save_adv=true",
                "attack=[cw2,deepfool,fgsm]",
                "attack.cw2.steps=100",
                "attack.cw2.binary_steps=4",
                "attack.cw2.c0=1.0",
                "metric=[aldp]",
                "metric.aldp.normalized=false",
            ],
        )
    )
    for name, r in report["attacks"].items():
        assert r["CC"] == pytest.approx(r["seconds"] / r["n_samples"]) and r["CC"] > 0, name
    for name in ("cw2", "deepfool"):
        saved = torch.load(tmp_path / "adv" / f"{name}.pt", weights_only=True)
        ok = saved["success"]
        changed = ((255 * saved["x_adv"][ok]).round() != (255 * saved["x"][ok]).round()).double().mean(1).mean()
        l0 = report["attacks"][name]["ALDp"]["L0"]
        print(f"{name}: ALD L0 {l0:.4f}, independent count of changed 8-bit values {changed.item():.4f}")
        assert l0 == pytest.approx(changed.item(), abs=1e-9) and l0 < 0.5
