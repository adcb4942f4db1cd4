"""Datamodules: offline ``MNIST5k`` and ``Digits``; ``MNIST``, ``CIFAR10``, ``SVHN`` via torchvision; a user's
``Folder``, ``Tensors`` and ``ImageNet`` (evaluation only)."""

from robustlab.data.base import ImageDataModule
from robustlab.data.digits import Digits
from robustlab.data.external import Folder, ImageNet, Tensors
from robustlab.data.mnist5k import MNIST5k
from robustlab.data.torchvision_sets import CIFAR10, MNIST, SVHN

__all__ = ["ImageDataModule", "MNIST5k", "Digits", "MNIST", "CIFAR10", "SVHN", "Folder", "Tensors", "ImageNet"]
