"""Shared fixtures: small models trained once per session."""

import os

import pytest
import torch

import robustlab
from robustlab.train import train
from tests.fixtures.standard import PATH as STANDARD
from tests.helpers import TINY, make_cfg

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def pgd_at_run(tmp_path_factory):
    """A tiny PGD-AT run through ``train``: its summary and output directory."""
    out = tmp_path_factory.mktemp("pgd_at")
    return train(make_cfg("train", out, TINY)), out


@pytest.fixture(scope="session")
def standard_model():
    """A standard (undefended) MNIST CNN trained by ``train.py`` on 3500 MNIST-5k images, eval mode: the committed
    ``tests/fixtures/standard.ckpt``, the same weights on every machine."""
    return robustlab.load_model(STANDARD)


@pytest.fixture(scope="session")
def mnist_test_batch():
    """The first 20 MNIST-5k test images of each class (200, grouped by class) and labels."""
    from robustlab.data import MNIST5k

    test = MNIST5k().load("test")
    idx = torch.cat([torch.nonzero(test.y == c)[:20, 0] for c in range(10)])
    return test.x[idx], test.y[idx]
