"""The corruption evaluation inside a real Trainer: batch-size independence and direct recomputation."""

import lightning as L
import pytest
import torch
from torch import nn

from robustlab.corruptions import corrupt
from robustlab.evaluation import Corruption
from robustlab.rng import Streams
from tests.evaluation.helpers import run_loop


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 5, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, 3))

    def forward(self, x):
        return self.net(x)

    def test_step(self, batch, batch_idx):
        return {"preds": self(batch[0]).argmax(1)}


def _data(n=50):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=32, mode="bilinear")
    return x, torch.randint(0, 3, (n,), generator=g)


def _run(batch_size, baseline=None):
    x, y = _data()
    corruption = Corruption(
        corruptions=("gaussian_noise", "fog", "contrast", "spatter"),
        severities=(1, 5),
        perturbations=("gaussian_noise", "rotate"),
        sequence_length=4,
    )
    loop = run_loop(
        _Tiny(), x, y, evaluations={"corruption": corruption}, batch_size=batch_size, wrap=False, baseline=baseline
    )
    return loop.results["test"]["corruption"]


def test_batch_size_does_not_change_results():
    a, b = _run(7), _run(50)
    assert a == b
    assert a["n_samples"] == 50 and set(a["errors"]) == {"gaussian_noise", "fog", "contrast", "spatter"}
    assert a["mFR"] is not None and set(a) >= {"mCE", "RmCE", "mFR", "errors", "n_samples"}


def test_errors_match_a_direct_computation():
    results = _run(16)
    x, y = _data()
    model = _Tiny().eval()
    gens = Streams(torch.arange(50), salt=100 * 1 + 5)
    with torch.no_grad():
        wrong = (model(corrupt(x, "fog", 5, gens)).argmax(1) != y).double().mean().item()
    assert results["errors"]["fog"][5] == pytest.approx(wrong)
    table = [results["errors"][c][s] for c in ("gaussian_noise", "fog", "contrast") for s in (1, 5)]
    assert results["mCE"] == pytest.approx(sum(table) / len(table))


def test_baseline_normalises():
    """A baseline identical to the model gives mCE = RmCE = mFR = 1 over the evaluated subset (3 benchmark
    corruptions at severities 1 and 5 of the 5 x 4 table; held-out spatter only tabulated)."""
    results = _run(25, baseline=_Tiny())
    assert results["normalised"]
    assert results["mCE"] == pytest.approx(1.0) and results["RmCE"] == pytest.approx(1.0)
    assert results["mFR"] == pytest.approx(1.0)
