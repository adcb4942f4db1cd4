"""MNIST, CIFAR-10 and SVHN through torchvision; downloaded only when ``download=true``."""

from torchvision import datasets, transforms

from robustlab.data.base import ImageDataModule
from robustlab.errors import RobustlabError


class _TorchvisionData(ImageDataModule):
    """Loads a torchvision dataset; training images get ``augment`` (crop/flip for colour sets)."""

    augment: list = []

    def __init__(self, augment: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.use_augment = augment

    def _make(self, train: bool, transform):
        raise NotImplementedError

    def load(self, split: str):
        augment = self.augment if (split == "train" and self.use_augment) else []
        try:
            return self._make(split != "test", transforms.Compose([*augment, transforms.ToTensor()]))
        except RuntimeError as err:
            if "download" not in str(err).lower() and "not found" not in str(err).lower():
                raise
            raise RobustlabError(
                f"{self.name} is not under {self.root!r}",
                "add data.download=true (needs a network) or data.root=DIR where it is, or use data=mnist5k offline",
            ) from None


class MNIST(_TorchvisionData):
    """The full MNIST: 60k training (``val_size`` held out for validation), 10k test."""

    name, in_channels, image_size = "mnist", 1, 28

    def _make(self, train, transform):
        return datasets.MNIST(self.root, train=train, transform=transform, download=self.download)


class CIFAR10(_TorchvisionData):
    """CIFAR-10: 50k training (random crop 4 + flip), 10k test."""

    name, in_channels, image_size = "cifar10", 3, 32
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]

    def _make(self, train, transform):
        return datasets.CIFAR10(self.root, train=train, transform=transform, download=self.download)


class SVHN(_TorchvisionData):
    """SVHN: 73k ``train`` (random crop 2, no flip: digits are not mirror-symmetric), 26k ``test``."""

    name, in_channels, image_size = "svhn", 3, 32
    augment = [transforms.RandomCrop(32, padding=2)]

    def _make(self, train, transform):
        return datasets.SVHN(self.root, split="train" if train else "test", transform=transform, download=self.download)
