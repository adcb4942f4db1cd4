"""The detection evaluation: exact, batch-size independent FPR and detection-rate counts on the batch record's
adversarial examples, and report["detection"] from an in-process evaluate."""

import json

import pytest
import torch

import robustlab
from robustlab.attacks import FGSM, Attack
from robustlab.evaluate import evaluate
from robustlab.evaluation import Detection
from robustlab.models.base import DetectorModel
from robustlab.train import train
from tests.evaluation.helpers import run_loop
from tests.helpers import make_cfg


class BrightnessDetector(DetectorModel):
    """Predicts class 1 for bright images; flags images whose mean exceeds 0.6."""

    def __init__(self):
        super().__init__()
        self.register_buffer("threshold", torch.tensor([0.6]))

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], 1)

    def detect(self, x):
        return x.flatten(1).mean(1) > self.threshold


class Shift(Attack):
    """Adds ``shift`` to every pixel ("brighten" +0.3, "darken" -0.3)."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def perturb(self, model, x, y, seeds, target=None):
        return (x + self.shift).clamp(0, 1)


def _run(x, y, batch_size):
    loop = run_loop(
        BrightnessDetector(),
        x,
        y,
        {"brighten": Shift(0.3), "darken": Shift(-0.3)},
        {"detection": Detection()},
        batch_size,
    )
    return loop.results["test"]["detection"]


def test_counts_match_a_direct_computation():
    torch.manual_seed(0)
    x = torch.rand(60, 1, 4, 4) * torch.linspace(0.2, 1.2, 60).view(-1, 1, 1, 1)
    x = x.clamp(0, 1)
    y = torch.randint(0, 2, (60,))
    det = BrightnessDetector()
    expected = {"threshold": pytest.approx(0.6), "fpr": det.detect(x).sum().item() / 60, "n_clean": 60, "attacks": {}}
    correct = det(x).argmax(1) == y
    for name, shift in [("brighten", 0.3), ("darken", -0.3)]:
        x_adv = (x + shift).clamp(0, 1)
        keep = correct & (det(x_adv).argmax(1) != y)
        expected["attacks"][name] = {
            "detection_rate": det.detect(x_adv[keep]).sum().item() / keep.sum().item(),
            "n": int(keep.sum()),
        }
    assert 0 < expected["attacks"]["brighten"]["detection_rate"] < 1 and expected["attacks"]["darken"]["n"] > 0
    for batch_size in (7, 60):
        assert _run(x, y, batch_size) == expected


def test_report_holds_detection_from_in_process_evaluate(tmp_path):
    summary = train(
        make_cfg(
            "train",
            tmp_path / "train",
            [
                "data=digits",
                "trainer.max_epochs=1",
                "optimizer.lr=0.003",
                "logger=none",
                "attack=[]",
                "test=false",
                "defense=feature_squeezing",
            ],
        )
    )
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path / "eval",
            [f"ckpt={summary['checkpoint']}", "logger=none", "attack=[fgsm]", "progress=false", "data.test_size=120"],
        )
    )
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["detection"] == report["detection"]
    model = robustlab.load_model(summary["checkpoint"])
    from robustlab.data import Digits

    test = Digits().load("test")
    x, y = test.x[:120], test.y[:120]
    x_adv = FGSM(eps=0.3)(model, x, y)
    with torch.no_grad():
        keep = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) != y)
    det = report["detection"]
    assert det["threshold"] == pytest.approx(model.threshold.item()) and det["n_clean"] == 120
    assert det["fpr"] == model.detect(x).sum().item() / 120
    assert det["attacks"]["fgsm"] == {
        "detection_rate": model.detect(x_adv[keep]).sum().item() / keep.sum().item(),
        "n": int(keep.sum()),
    }
    assert det["attacks"]["fgsm"]["detection_rate"] > det["fpr"], "squeezing must flag FGSM more than clean images"
