"""The attack callback inside a real Trainer: exact counts, modes, the inference-mode guard, attack-utility
metrics per attack, AAW/AAB by attack kind, ``last_batch`` and saved adversarial examples."""
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from robustlab import RobustlabError
from robustlab.attacks import FGSM, PGD, Attack
from robustlab.attacks.base import random_like
from robustlab.callbacks import AttackCallback
from robustlab.data.base import Indexed, TensorPairs
from robustlab.defenses import RobustClassifier
from robustlab.metrics import ACAC, RGB, ALDp
from robustlab.metrics.functional import attack_success, lp_distortion


def _loader(x, y, batch_size=16):
    return DataLoader(Indexed(TensorPairs(x, y)), batch_size=batch_size)


def _test(model, x, y, inference_mode=False, **kwargs):
    callback = AttackCallback({"fgsm": FGSM(eps=0.1), "pgd": PGD(eps=0.1, step=0.02, steps=5)}, stages=("test",),
                              progress=False, **kwargs)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=inference_mode, callbacks=[callback])
    trainer.test(RobustClassifier(model), _loader(x, y), verbose=False)
    return callback.results["test"]


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
    x, y = mnist_test_batch[0][:49], mnist_test_batch[1][:49]   # 7 batches of 7, or one of 49: no 1-image batch
    callback = AttackCallback({"pgd": PGD(eps=0.1, step=0.02, steps=5)}, stages=("test",), progress=False)
    results = []
    for batch_size in (7, 49):
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            inference_mode=False, callbacks=[callback])
        trainer.test(RobustClassifier(standard_model), _loader(x, y, batch_size), verbose=False)
        results.append({k: v for k, v in callback.results["test"]["attacks"]["pgd"].items() if k != "seconds"})
    assert results[0] == results[1]


def test_attack_under_inference_mode_fails_clearly(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    with pytest.raises(RobustlabError, match="inference_mode"):
        _test(standard_model, x[:16], y[:16], inference_mode=True)


def test_targeted_mr_counts_hits_on_the_target(standard_model, mnist_test_batch):
    from robustlab.attacks import ILLC

    x, y = mnist_test_batch[0][:64], mnist_test_batch[1][:64]
    attack = ILLC(eps=0.2, step=0.02, steps=10)
    callback = AttackCallback({"illc": attack}, stages=("test",), progress=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[callback])
    trainer.test(RobustClassifier(standard_model), _loader(x, y, 64), verbose=False)
    with torch.no_grad():
        clean = standard_model(x).argmax(1) == y
        x_adv = ILLC(eps=0.2, step=0.02, steps=10)(standard_model, x, y)
        hit = standard_model(x_adv).argmax(1) == attack.last_target
        wrong = standard_model(x_adv).argmax(1) != y
    assert callback.results["test"]["attacks"]["illc"]["MR"] == (clean & hit).sum().item() / clean.sum().item()
    assert (clean & hit).sum() < (clean & wrong).sum(), "the targeted MR must not count untargeted misses"


def _run(model, x, y, attacks, batch_size=16, callbacks=(), **kwargs):
    callback = AttackCallback(attacks, stages=("test",), progress=False, **kwargs)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[callback, *callbacks])
    trainer.test(RobustClassifier(model), _loader(x, y, batch_size), verbose=False)
    return callback


class _Probe(L.Callback):
    """A later evaluation callback: records what the attack callback exposed for each batch."""

    def __init__(self, attack_callback):
        self.attack_callback, self.seen = attack_callback, []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        last = self.attack_callback.last_batch
        assert last["idx"] is batch[2], "last_batch must be this batch's, set before later callbacks run"
        self.seen.append(last)


class _Noise(Attack):
    """A gradient-free attack: random-sign noise, seeded per example."""

    kind = "blackbox"

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def perturb(self, model, x, y, seeds, target=None):
        return (x + self.eps * (2 * random_like(x, seeds) - 1).sign()).clamp(0, 1)


def test_metrics_per_attack_match_a_direct_computation(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:60], mnist_test_batch[1][:60]
    attacks = {"fgsm": FGSM(eps=0.15), "noise": _Noise(eps=0.5)}
    metrics = {"acac": ACAC(), "aldp": ALDp(), "aldp_raw": ALDp(normalized=False), "rgb": RGB(radius=0.5)}
    callback = AttackCallback(attacks, stages=("test",), progress=False, metrics=metrics)
    probe = _Probe(callback)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[callback, probe])
    trainer.test(RobustClassifier(standard_model), _loader(x, y, 25), verbose=False)   # batches of 25, 25, 10
    results = callback.results["test"]["attacks"]
    with torch.no_grad():
        clean_logits = standard_model(x)
    for name, attack in attacks.items():
        x_adv = attack(standard_model, x, y, seeds=torch.arange(60))
        with torch.no_grad():
            adv_logits = standard_model(x_adv)
        success = attack_success(clean_logits, adv_logits, y)
        assert 0 < success.sum() < 60
        r = results[name]
        key, other = ("AAW", "AAB") if name == "fgsm" else ("AAB", "AAW")
        assert r[key] == r["robust_accuracy"] and other not in r
        expected = {"ACAC": ACAC(), "ALDp_aldp": ALDp(), "ALDp_aldp_raw": ALDp(normalized=False), "RGB": RGB(radius=0.5)}
        for k, metric in expected.items():
            metric.update(standard_model, x, x_adv, y, clean_logits, adv_logits)
            value = metric.compute()
            value = {s: v.item() for s, v in value.items()} if isinstance(value, dict) else value.item()
            assert r[k] == pytest.approx(value, rel=1e-6), (name, k)   # float32 logits of other batch sizes
        seen_adv = torch.cat([b["adv"][name] for b in probe.seen])
        assert torch.equal(torch.cat([b["success"][name] for b in probe.seen]), success)
        torch.testing.assert_close(seen_adv, x_adv)
    assert torch.equal(torch.cat([b["idx"] for b in probe.seen]), torch.arange(60))
    torch.testing.assert_close(torch.cat([b["clean_logits"] for b in probe.seen]), clean_logits)


def test_an_attack_of_unknown_kind_is_refused(standard_model, mnist_test_batch):
    attack = FGSM(eps=0.1)
    attack.kind = "greybox"
    with pytest.raises(RobustlabError, match="kind 'greybox'"):
        _run(standard_model, mnist_test_batch[0][:8], mnist_test_batch[1][:8], {"fgsm": attack})


def test_save_adv_writes_every_sample_once(standard_model, mnist_test_batch, tmp_path):
    from robustlab.attacks import ILLC

    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]   # 50 samples, 2 per class
    attacks = {"fgsm": FGSM(eps=0.15), "illc": ILLC(eps=0.3, step=0.05, steps=10)}
    callback = _run(standard_model, x, y, attacks, batch_size=16, metrics={"aldp": ALDp()}, save_adv=tmp_path / "adv")
    results = callback.results["test"]["attacks"]
    for name in attacks:
        saved = torch.load(tmp_path / "adv" / f"{name}.pt", weights_only=True)
        assert set(saved) == {"x", "x_adv", "y", "success", "clean_pred", "adv_pred", "idx"} | (
            {"target"} if name == "illc" else set())
        assert torch.equal(saved["idx"], torch.arange(50)) and torch.equal(saved["x"], x) and torch.equal(saved["y"], y)
        fooled = saved["adv_pred"] == saved["target"] if name == "illc" else saved["adv_pred"] != saved["y"]
        clean_correct = saved["clean_pred"] == saved["y"]
        assert torch.equal(saved["success"], clean_correct & fooled) and 0 < saved["success"].sum() < 50
        assert results[name]["MR"] == saved["success"].sum().item() / clean_correct.sum().item()
        ok = saved["success"]
        recomputed = lp_distortion(saved["x"][ok], saved["x_adv"][ok]).mean(0).tolist()
        assert [results[name]["ALDp"][k] for k in ("L0", "L2", "Linf")] == pytest.approx(recomputed, rel=1e-9)
