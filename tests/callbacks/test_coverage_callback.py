"""CoverageCallback in a real Trainer (clean and adversarial sets, batch-size independence), the profile
stored by training, and report["coverage"] from evaluate."""
import shutil
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import robustlab
from robustlab.attacks import FGSM
from robustlab.callbacks import AttackCallback, CoverageCallback
from robustlab.callbacks.coverage_callback import batch_outputs, training_images
from robustlab.checkpoint import read_checkpoint
from robustlab.data.base import Indexed, TensorPairs
from robustlab.evaluate import evaluate
from robustlab.metrics import KMNCov, NBCov, NeuronProfile, SNACov, TKNCov, profile_neurons
from robustlab.metrics.coverage import layer_outputs, profile_path, select_layers, weights_fingerprint
from tests.helpers import make_cfg


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x):
        return self.model(x)

    def test_step(self, batch, batch_idx):
        return None


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 13, 13, generator=g), torch.randint(0, 3, (n,), generator=g)


def _profile() -> NeuronProfile:
    net = _Tiny().model.eval()
    return profile_neurons(net, [_data(30, seed=1)[0]], select_layers(net))


def _run(batch_size, coverage_first=False):
    x, y = _data()
    attack = AttackCallback({"fgsm": FGSM(eps=0.2)}, stages=("test",), progress=False)
    cov = CoverageCallback(k=5, top_k=1, profile=_profile())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[cov, attack] if coverage_first else [attack, cov])
    trainer.test(_Tiny(), DataLoader(Indexed(TensorPairs(x, y)), batch_size=batch_size), verbose=False)
    return cov.results


def _direct(x: torch.Tensor) -> dict[str, float]:
    net, profile = _Tiny().model.eval(), _profile()
    outputs = layer_outputs(net, x, select_layers(net))
    metrics = {"KMNCov": KMNCov(profile, 5), "NBCov": NBCov(profile), "SNACov": SNACov(profile),
               "TKNCov": TKNCov(profile, 1)}
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


def test_needs_the_attack_callback_first():
    with pytest.raises(RuntimeError, match="register the AttackCallback before it"):
        _run(20, coverage_first=True)


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
    assert profile_path(ckpt).stat().st_mtime_ns == stamp   # the cached profile is reused
    assert again["profile"] == report["profile"] and again["n_samples"] == 10


def test_readers_share_one_forward_pass_per_batch_and_image_set():
    """Coverage and structure read the same layer outputs: the first reader runs the forward pass, the
    second takes the cached result, which is then dropped; a lone reader caches nothing."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    layers, x, idx = {"1": model[1]}, torch.rand(3, 1, 2, 2), torch.arange(3)
    with torch.no_grad():
        logits = model(x)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    source = SimpleNamespace(last_batch={"idx": idx}, output_readers=2)
    first = batch_outputs(source, model, layers, "clean", x, idx)
    second = batch_outputs(source, model, layers, "clean", x, idx)
    assert len(calls) == 1 and first[0] is second[0] and first[1] is second[1]
    assert source.last_batch["outputs"] == {}
    assert torch.equal(first[1], logits) and torch.equal(first[0]["1"], logits)
    source.output_readers = 1
    reduced, _ = batch_outputs(source, model, layers, "clean", x, idx, reduce=lambda o: o.sum(1))
    assert len(calls) == 2 and source.last_batch["outputs"] == {}
    assert torch.allclose(reduced["1"], logits.sum(1))
