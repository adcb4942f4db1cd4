"""Each defense trains briefly through train.py's task, reloads through load_model, and evaluates."""

import pytest
import torch

import robustlab
from robustlab.evaluate import evaluate
from robustlab.train import train
from tests.helpers import TINY, make_cfg


@pytest.mark.parametrize("defense", ["standard", "pgd_at", "fgsm_at", "trades", "mart", "igr"])
def test_defense_trains_reloads_and_evaluates(defense, tmp_path):
    tiny = [o for o in TINY if not o.startswith(("defense.attack.steps", "trainer.max_epochs"))]
    summary = train(
        make_cfg(
            "train",
            tmp_path / "train",
            [*tiny, f"defense={defense}", "trainer.max_epochs=1", "attack=[]", "test=false"],
        )
    )
    model = robustlab.load_model(summary["checkpoint"])
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path / "eval",
            [f"ckpt={summary['checkpoint']}", "logger=none", "data.test_size=50", "attack=[fgsm]"],
        )
    )
    assert report["defense_name"] == defense and report["clean"]["n_samples"] == 50
    assert report["clean"]["CA"] > 0.3, "one epoch on 1000 digits must learn something"
