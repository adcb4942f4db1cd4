"""scikit-learn digits: shapes, range and per-class test split."""

import numpy as np

from robustlab.data import Digits


def test_digits_resized_and_in_range():
    dm = Digits()
    dm.setup("fit")
    x, y, _ = dm.train_set[0]
    assert x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert len(dm.test_set) == 300 and np.bincount(dm.test_set.dataset.y.numpy()).tolist() == [30] * 10
    assert len(dm.train_set) + len(dm.val_set) == 1797 - 300


def test_digits_native_size():
    assert Digits(image_size=8).load("test").x.shape[1:] == (1, 8, 8)
