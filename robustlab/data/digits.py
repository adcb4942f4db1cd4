"""scikit-learn's 8x8 handwritten digits (1797 images), offline."""

import torch
import torch.nn.functional as F

from robustlab.data.base import ImageDataModule, TensorPairs, class_tail_split


class Digits(ImageDataModule):
    """``sklearn.datasets.load_digits``, scaled to [0,1] and resized (bilinear) to
    ``image_size`` (28 by default, so MNIST models accept it; 8 is the native size).
    Test split: the last 30 images of each class, interleaved by class."""

    name, in_channels = "digits", 1

    def __init__(self, image_size: int = 28, val_size: int = 150, **kwargs):
        super().__init__(val_size=val_size, **kwargs)
        self.image_size = image_size

    def load(self, split: str) -> TensorPairs:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        rows = class_tail_split(y, 30, split)
        images = torch.tensor(x[rows] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
        if self.image_size != 8:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        return TensorPairs(images.clamp(0, 1), y[rows])
