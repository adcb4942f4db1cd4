"""The attack callback inside a real Trainer: exact counts, modes and the inference-mode guard."""
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from robustlab import RobustlabError
from robustlab.attacks import FGSM, PGD
from robustlab.callbacks import AttackCallback
from robustlab.data.base import Indexed, TensorPairs
from robustlab.defenses import RobustClassifier


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
    x, y = mnist_test_batch[0][:50], mnist_test_batch[1][:50]
    callback = AttackCallback({"pgd": PGD(eps=0.1, step=0.02, steps=5)}, stages=("test",), progress=False)
    results = []
    for batch_size in (7, 50):
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
