"""CIFAR-10-C datamodule on tiny fake .npy files."""

import numpy as np
import pytest
import torch

from robustlab import RobustlabError
from robustlab.data.cifar10c import CIFAR10C


def _fake(root, n=4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
    np.save(root / "fog.npy", images)
    np.save(root / "labels.npy", np.arange(5 * n, dtype=np.uint8) % 10)
    return images


def test_reads_the_chosen_severity(tmp_path):
    images = _fake(tmp_path)
    dm = CIFAR10C(root=str(tmp_path), corruption="fog", severity=3, batch_size=2)
    dm.setup("test")
    x, y, i = next(iter(dm.test_dataloader()))
    assert len(dm.test_set) == 4 and x.shape == (2, 3, 32, 32)
    assert torch.allclose(x[0], torch.from_numpy(images[8]).permute(2, 0, 1).float() / 255)
    assert y.tolist() == [8, 9] and i.tolist() == [0, 1]


def test_missing_files_are_a_clear_error(tmp_path):
    with pytest.raises(RobustlabError, match="fog.npy is missing"):
        CIFAR10C(root=str(tmp_path), corruption="fog").setup("test")


def test_bad_choices(tmp_path):
    with pytest.raises(RobustlabError, match="unknown corruption"):
        CIFAR10C(root=str(tmp_path), corruption="mist")
    with pytest.raises(RobustlabError, match="severity"):
        CIFAR10C(root=str(tmp_path), severity=7)


def test_config_instantiates(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load("configs/data/cifar10c.yaml")
    cfg.root, cfg.seed, cfg.corruption = str(tmp_path), 0, "fog"
    _fake(tmp_path)
    dm = instantiate(cfg)
    dm.setup("test")
    assert len(dm.test_set) == 4
