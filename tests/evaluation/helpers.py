"""Running the evaluation loop inside a real Trainer on tensors."""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from robustlab.data.base import Indexed, TensorPairs
from robustlab.defenses import RobustClassifier
from robustlab.evaluation import EvaluationLoop


def loader(x, y, batch_size=16):
    return DataLoader(Indexed(TensorPairs(x, y)), batch_size=batch_size)


def run_loop(model, x, y, attacks=None, evaluations=None, batch_size=16, inference_mode=False, wrap=True, **kwargs):
    """``EvaluationLoop(attacks, evaluations)`` over ``(x, y)`` in batches of ``batch_size``; returns the loop."""
    loop = EvaluationLoop(attacks, evaluations, stages=("test",), progress=False, **kwargs)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=inference_mode,
        callbacks=[loop],
    )
    trainer.test(RobustClassifier(model) if wrap else model, loader(x, y, batch_size), verbose=False)
    return loop


class Tiny(L.LightningModule):
    """A 3-class conv net on 13x13 images whose test step returns nothing (the loop runs the clean pass)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x):
        return self.model(x)

    def test_step(self, batch, batch_idx):
        return None


def tiny_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 13, 13, generator=g), torch.randint(0, 3, (n,), generator=g)
