"""The released CIFAR-10-C / CIFAR-100-C arrays: one ``<corruption>.npy`` per corruption plus ``labels.npy``."""

from pathlib import Path

import numpy as np
import torch

from robustlab.corruptions import CORRUPTIONS
from robustlab.data.base import ImageDataModule, TensorPairs
from robustlab.errors import RobustlabError

PER_SEVERITY = 10000


class CIFAR10C(ImageDataModule):
    """Test split: the ``corruption`` images at ``severity`` (1-5) from ``root/<corruption>.npy``
    (uint8, N x 32 x 32 x 3, severities stacked 1..5, ``PER_SEVERITY`` each) with ``root/labels.npy``.
    ``num_classes=100`` reads CIFAR-100-C. There is no training split: training and validation sets
    are empty, so use it for evaluation only."""

    name, in_channels, image_size = "cifar10c", 3, 32

    def __init__(self, corruption: str = "gaussian_noise", severity: int = 5, num_classes: int = 10, **kwargs):
        kwargs.setdefault("val_size", 0)
        super().__init__(**kwargs)
        if corruption not in CORRUPTIONS:
            raise RobustlabError(f"unknown corruption {corruption!r}", f"use one of {', '.join(CORRUPTIONS)}")
        if severity not in (1, 2, 3, 4, 5):
            raise RobustlabError(f"severity {severity!r} is not in 1..5", "pass data.severity=1..5")
        self.corruption, self.severity, self.num_classes = corruption, int(severity), int(num_classes)
        self.name = "cifar10c" if self.num_classes == 10 else "cifar100c"

    def _path(self, stem: str) -> Path:
        path = Path(self.root) / f"{stem}.npy"
        if not path.is_file():
            raise RobustlabError(
                f"{path} is missing ({self.name.upper().replace('C', '-C', 1)} arrays expected under {self.root!r})",
                "download CIFAR-10-C / CIFAR-100-C from Zenodo and set data.root=DIR",
            )
        return path

    def load(self, split: str) -> TensorPairs:
        images = np.load(self._path(self.corruption), mmap_mode="r")
        labels = np.load(self._path("labels"), mmap_mode="r")
        if split != "test":
            return TensorPairs(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
        n = len(images) // 5
        if len(images) % 5 or len(labels) != len(images):
            raise RobustlabError(
                f"{self.corruption}.npy has {len(images)} images and labels.npy {len(labels)}",
                "use the released arrays: 5 severities stacked, one label per image",
            )
        rows = slice((self.severity - 1) * n, self.severity * n)
        x = torch.from_numpy(np.array(images[rows])).permute(0, 3, 1, 2).float() / 255
        return TensorPairs(x, torch.from_numpy(np.asarray(labels[rows]).astype(np.int64)))

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is None:
            super().setup(stage)

    def describe(self) -> str:
        return f"{self.name} {self.corruption} severity {self.severity} (3x32x32, {self.num_classes} classes)"
