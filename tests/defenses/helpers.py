"""The end-to-end check shared by defense tests."""

import torch

import robustlab
from robustlab.evaluate import evaluate
from robustlab.train import train
from tests.helpers import make_cfg


def train_reload_evaluate(tmp_path, defense: str, overrides: list[str], x: torch.Tensor, y: torch.Tensor):
    """Train ``defense`` (plus ``overrides``) for one epoch on 1000 MNIST-5k images, reload it through
    ``robustlab.load_model``, check it beats chance on ``(x, y)`` and evaluate it under FGSM on 50 test
    images. Returns the training summary and the reloaded model."""
    summary = train(
        make_cfg(
            "train",
            tmp_path / "train",
            [
                f"defense={defense}",
                *overrides,
                "data.train_size=1000",
                "data.val_size=100",
                "trainer.max_epochs=1",
                "logger=none",
                "attack=[]",
                "test=false",
            ],
        )
    )
    model = robustlab.load_model(summary["checkpoint"])
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.2, "well above chance (0.1) after 20 steps"
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path / "eval",
            [f"ckpt={summary['checkpoint']}", "logger=none", "data.test_size=50", "attack=[fgsm]"],
        )
    )
    assert report["defense_name"] == defense and report["clean"]["n_samples"] == 50
    return summary, model
