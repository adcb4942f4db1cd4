"""MagNet: reconstruction-error and JSD scores by hand, the reformer in front of the classifier,
per-detector thresholds, and a checkpoint that reloads as the detector and evaluates."""

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from torch import nn

import robustlab
from robustlab import RobustlabError
from robustlab.defenses import MagNet
from robustlab.defenses.magnet import MagNetDetector, autoencoder
from robustlab.evaluate import evaluate
from robustlab.models import MNISTCNN
from robustlab.train import train
from tests.helpers import make_cfg


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _detector(**kwargs):
    det = MagNetDetector(Linear(), ["mnist_ii", "mnist_ii"], [[0, "l2"], [1, "l1"], [0, "jsd", 10]], **kwargs)
    det.autoencoders = nn.ModuleList([Scale(0.5), Scale(0.8)])  # hand-made "autoencoders"
    return det


def test_scores_match_a_hand_computation():
    det = _detector()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    det.double()
    scores = det.batched_scores(x).numpy()
    xs = x.flatten(1).numpy()
    np.testing.assert_allclose(scores[:, 0], ((0.5 * xs) ** 2).mean(1), rtol=1e-12)  # |x - 0.5x|^2
    np.testing.assert_allclose(scores[:, 1], np.abs(0.2 * xs).mean(1), rtol=1e-12)  # |x - 0.8x|
    with torch.no_grad():
        logits, logits_rec = (det.net(v).numpy() / 10 for v in (x, 0.5 * x))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    q = np.exp(logits_rec) / np.exp(logits_rec).sum(1, keepdims=True)
    np.testing.assert_allclose(scores[:, 2], [jensenshannon(a, b) ** 2 for a, b in zip(p, q)], rtol=1e-8)
    with torch.no_grad():
        assert torch.equal(det(x), det.net(0.5 * x)), "the reformer (autoencoder 0) runs before the classifier"


def test_each_detector_gets_its_own_false_positive_rate():
    det = _detector(fpr=[0.1, 0.05, 0.0])
    torch.manual_seed(1)
    val = torch.rand(100, 1, 4, 4)
    det.calibrate(val)
    flagged = (det.batched_scores(val) > det.threshold).sum(0).tolist()
    assert flagged == [10, 5, 0]
    assert det.detect(val).sum() <= 15
    assert _detector(fpr=0.06).fpr == pytest.approx([0.02] * 3), "one rate is split over the detectors"
    with pytest.raises(RobustlabError, match="bad MagNet detector"):
        MagNetDetector(Linear(), ["mnist_ii"], [[1, "l1"]])


def test_autoencoders_keep_the_image_shape():
    x = torch.rand(2, 3, 32, 32)
    for arch in ("mnist_i", "mnist_ii", "cifar"):
        assert autoencoder(arch, 3)(x).shape == x.shape


def test_autoencoders_train_with_their_own_learning_rate():
    module = MagNet(
        MNISTCNN(),
        ["mnist_i", "mnist_ii"],
        [[0, "l2"], [1, "l1"]],
        ae_lr=0.01,
        optimizer=partial(torch.optim.Adam, lr=0.001),
    )
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [0.001, 0.01]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in module.inference.autoencoders.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in module.model.parameters()}
    module.eval()  # no dropout: the loss is deterministic given the noise
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    loss = module.training_loss(x, y)
    torch.manual_seed(1)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)  # MagNet's noise volume 0.1 (the default)
    expected = F.cross_entropy(module.model(x), y) + sum(
        F.mse_loss(ae(noisy), x) for ae in module.inference.autoencoders
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def _train_and_evaluate(tmp_path, overrides):
    summary = train(
        make_cfg(
            "train",
            tmp_path / "train",
            [
                "data=digits",
                "optimizer.lr=0.003",
                "logger=none",
                "attack=[]",
                "test=false",
                "defense=magnet",
                *overrides,
            ],
        )
    )
    model = robustlab.load_model(summary["checkpoint"])
    assert isinstance(model, MagNetDetector) and model.fpr == [0.001, 0.001]
    assert not torch.isnan(model.threshold).any()
    report = evaluate(
        make_cfg(
            "eval", tmp_path / "eval", [f"ckpt={summary['checkpoint']}", "logger=none", "attack=[]", "progress=false"]
        )
    )
    return model, report


def test_magnet_trains_reloads_and_evaluates(tmp_path):
    model, report = _train_and_evaluate(tmp_path, ["data.train_size=300", "trainer.max_epochs=1"])
    det = report["detection"]
    assert det["threshold"] == pytest.approx(model.threshold.tolist()) and det["n_clean"] == 300
    assert det["fpr"] < 0.05


@pytest.mark.slow
def test_magnet_reformed_classifier_learns(tmp_path):
    model, report = _train_and_evaluate(tmp_path, ["trainer.max_epochs=2"])
    assert report["clean"]["CA"] > 0.3, "the reformed classifier must learn something"
    det = report["detection"]
    assert det["threshold"] == pytest.approx(model.threshold.tolist()) and det["n_clean"] == 300
    assert det["fpr"] < 0.05
