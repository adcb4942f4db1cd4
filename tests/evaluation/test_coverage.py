"""The coverage evaluation in a real Trainer (clean and adversarial sets, batch-size and order independence), the
profile stored by training, and report["coverage"] from evaluate."""

import shutil

import torch
from torch.utils.data import DataLoader

import robustlab
from robustlab.attacks import FGSM
from robustlab.checkpoint import read_checkpoint
from robustlab.evaluate import evaluate
from robustlab.evaluation import AttackEvaluation, Coverage, Structure
from robustlab.evaluation.coverage import training_images
from robustlab.metrics import KMNCov, NBCov, NeuronProfile, SNACov, TKNCov, profile_neurons
from robustlab.metrics.coverage import layer_outputs, profile_path, select_layers, weights_fingerprint
from tests.evaluation.helpers import Tiny as _Tiny
from tests.evaluation.helpers import run_loop
from tests.evaluation.helpers import tiny_data as _data
from tests.helpers import make_cfg


def _profile() -> NeuronProfile:
    net = _Tiny().model.eval()
    return profile_neurons(net, [_data(30, seed=1)[0]], select_layers(net))


def _run(batch_size, coverage_first=False):
    x, y = _data()
    evaluations = {
        "attacks": AttackEvaluation(),
        "coverage": Coverage(k=5, top_k=1, profile=_profile()),
        "structure": Structure(ebd=False, ebd2=False, eni=False),
    }
    if coverage_first:
        evaluations = dict(reversed(evaluations.items()))
    loop = run_loop(_Tiny(), x, y, {"fgsm": FGSM(eps=0.2)}, evaluations, batch_size, wrap=False)
    return loop.results["test"]["coverage"]


def _direct(x: torch.Tensor) -> dict[str, float]:
    net, profile = _Tiny().model.eval(), _profile()
    outputs = layer_outputs(net, x, select_layers(net))
    metrics = {
        "KMNCov": KMNCov(profile, 5),
        "NBCov": NBCov(profile),
        "SNACov": SNACov(profile),
        "TKNCov": TKNCov(profile, 1),
    }
    for m in metrics.values():
        m.update(outputs)
    return {k: m.compute().item() for k, m in metrics.items()}


def test_clean_and_adversarial_coverage_match_a_direct_computation():
    results = _run(16)
    x, y = _data()
    assert results["clean"] == _direct(x)
    assert results["attacks"]["fgsm"] == _direct(FGSM(eps=0.2)(_Tiny().eval(), x, y))
    assert results["clean"] != results["attacks"]["fgsm"]
    assert results["n_samples"] == 40 and results["n_neurons"] == 7 and results["profile"]["source"] == "given"
    assert _run(7) == results


def test_evaluation_order_does_not_matter():
    assert _run(20, coverage_first=True) == _run(20)


def test_training_stores_the_profile_next_to_the_checkpoint(pgd_at_run):
    summary, _ = pgd_at_run
    path = profile_path(summary["checkpoint"])
    profile = NeuronProfile.load(path)
    model = robustlab.load_model(summary["checkpoint"])
    assert profile.fingerprint == weights_fingerprint(model)
    assert list(profile.layers) == list(select_layers(model))
    meta = read_checkpoint(summary["checkpoint"])["robustlab"]
    from hydra.utils import instantiate

    datamodule = instantiate(meta["data"])
    data = training_images(datamodule)
    assert profile.n_samples == len(data) == meta["data"]["train_size"]
    direct = profile_neurons(model, DataLoader(data, batch_size=len(data)), select_layers(model))
    torch.testing.assert_close(profile.low, direct.low, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(profile.high, direct.high, rtol=1e-5, atol=1e-5)


def test_evaluate_reports_coverage_and_caches_a_missing_profile(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    ckpt = tmp_path / "copy" / "last.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(summary["checkpoint"], ckpt)
    args = [f"ckpt={ckpt}", "logger=none", "progress=false", "suite=coverage", "attack=[fgsm]", "data.test_size=100"]
    report = evaluate(make_cfg("eval", tmp_path / "a", args))["coverage"]
    assert profile_path(ckpt).is_file() and report["profile"]["source"] == str(profile_path(ckpt))
    assert report["n_samples"] == 100 and set(report["attacks"]) == {"fgsm"}
    for values in (report["clean"], report["attacks"]["fgsm"]):
        assert set(values) == {"KMNCov", "NBCov", "SNACov", "TKNCov"} and all(0 <= v <= 1 for v in values.values())
    # The bounds come from the training images; FGSM at eps 0.3 drives more neurons above them.
    assert report["attacks"]["fgsm"]["SNACov"] > report["clean"]["SNACov"]
    stamp = profile_path(ckpt).stat().st_mtime_ns
    again = evaluate(make_cfg("eval", tmp_path / "b", [*args[:-1], "data.test_size=10"]))["coverage"]
    assert profile_path(ckpt).stat().st_mtime_ns == stamp  # the cached profile is reused
    assert again["profile"] == report["profile"] and again["n_samples"] == 10
