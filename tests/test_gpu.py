"""The GPU path: seeded noise (counter-based, drawn on the device) equal on the CPU and on CUDA and for batch sizes
1, 7 and 64; ``trainer=gpu`` training (bf16-mixed) and evaluation end to end, against the CPU's report;
``trainer=ddp`` on two GPUs against one. The CUDA tests are skipped where no GPU is present (they ran nowhere yet: no
GPU was available to this project's sessions)."""

import json

import pytest
import torch

from robustlab.attacks.base import random_like
from robustlab.evaluate import evaluate
from robustlab.rng import Streams
from robustlab.train import train
from tests.helpers import make_cfg, run_cli

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_noise_does_not_depend_on_batch_size_or_device(device):
    seeds = torch.arange(64) * 7919 + 3
    full = {kind: random_like(torch.zeros(64, 3, 32, 32), seeds, kind) for kind in ("uniform", "normal", "laplace")}
    signs = Streams(seeds).rademacher(5, 8)
    for size in (1, 7, 64):
        for start in range(0, 64, size):
            part = seeds[start : start + size].to(device)
            x = torch.zeros(len(part), 3, 32, 32, device=device)
            for kind, expected in full.items():
                noise = random_like(x, part, kind)
                assert noise.device.type == device
                exact = kind == "uniform" or device == "cpu"  # CUDA's log, cos and sin may differ in the last bit
                tol = 0 if exact else 1e-5
                torch.testing.assert_close(noise.cpu(), expected[start : start + size], rtol=tol, atol=tol)
            drawn = Streams(part).draw("rademacher", (5, 8), x)
            assert torch.equal(drawn.cpu(), signs[start : start + size])


@GPU
def test_train_and_evaluate_on_a_gpu_match_the_cpu(tmp_path):
    sizes = ["data.train_size=1000", "data.val_size=100", "data.test_size=200", "logger=none", "attack=[pgd_linf_val]"]
    overrides = ["defense=pgd_at", "model._target_=tests.regression.tiny.TinyCNN", "defense.attack.steps=3", *sizes]
    overrides += ["trainer=gpu", "trainer.max_epochs=1", "precision=bf16-mixed", "+trainer.enable_progress_bar=false"]
    summary = train(make_cfg("train", tmp_path / "train", overrides))
    assert summary["report"]
    common = [f"ckpt={summary['checkpoint']}", "logger=none", "progress=false", "data.test_size=200"]
    cpu = evaluate(make_cfg("eval", tmp_path / "cpu", [*common, "trainer=cpu"]))
    gpu = evaluate(make_cfg("eval", tmp_path / "gpu", [*common, "trainer=gpu"]))
    reduced = [*common, "trainer=gpu", "precision=bf16-mixed", "compile=true"]
    fast = evaluate(make_cfg("eval", tmp_path / "bf16", reduced))
    assert gpu["clean"]["n_samples"] == cpu["clean"]["n_samples"] == 200
    assert abs(gpu["clean"]["CA"] - cpu["clean"]["CA"]) <= 1 / 200  # float rounding may move an example at most
    for name, result in cpu["attacks"].items():
        assert abs(gpu["attacks"][name]["robust_accuracy"] - result["robust_accuracy"]) <= 2 / 200, name
        assert abs(fast["attacks"][name]["robust_accuracy"] - result["robust_accuracy"]) <= 0.05, name


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_on_two_gpus_counts_every_example_once(tmp_path):
    ckpt = "tests/regression/fixtures/standard/checkpoints/last.ckpt"
    common = [f"ckpt={ckpt}", "logger=none", "progress=false", "data.test_size=101", "attack=[fgsm]"]
    one = evaluate(make_cfg("eval", tmp_path / "one", [*common, "trainer=gpu"]))
    run = run_cli("evaluate.py", *common, "trainer=ddp", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert run.returncode == 0, run.stderr[-2000:]
    two = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert two["world_size"] == 2 and two["clean"]["n_samples"] == 101
    assert abs(two["attacks"]["fgsm"]["robust_accuracy"] - one["attacks"]["fgsm"]["robust_accuracy"]) <= 1 / 101
