"""Fixtures for the attack tests: a cheap MLP for query-hungry black-box checks and a second
standard CNN (another seed) for transfer."""

import pytest
import torch
from torch import nn

import robustlab
from robustlab.train import train
from tests.helpers import make_cfg


@pytest.fixture(scope="session")
def mlp_model():
    """A 784-64-10 MLP trained for real on the 4000 MNIST-5k training images (~93% test accuracy,
    about 0.5 s): its forward pass is ~100x cheaper than the CNN's, so black-box attacks can
    spend realistic query budgets in CI. Eval mode, frozen."""
    from robustlab.data import MNIST5k

    train_set = MNIST5k().load("train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        for batch in torch.randperm(len(train_set.y)).split(128):
            loss = nn.functional.cross_entropy(model(train_set.x[batch]), train_set.y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def second_standard_model(tmp_path_factory):
    """A standard MNIST CNN trained briefly with another seed (1 epoch on 1000 images): its
    checkpoint path and the loaded eval-mode model."""
    out = tmp_path_factory.mktemp("standard_seed1")
    summary = train(
        make_cfg(
            "train",
            out,
            [
                "defense=standard",
                "seed=1",
                "trainer.max_epochs=1",
                "data.train_size=1000",
                "data.val_size=200",
                "logger=none",
                "attack=[]",
                "test=false",
            ],
        )
    )
    return summary["checkpoint"], robustlab.load_model(summary["checkpoint"])


class Counting(nn.Module):
    """Wraps a model and counts the images it is queried on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.model(x)


@pytest.fixture
def counting():
    """``counting(model)``: a wrapper whose ``images`` counts every image forwarded."""
    return Counting
