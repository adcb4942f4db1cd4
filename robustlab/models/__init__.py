"""Classifiers that take [0,1] images (normalisation is their first layer)."""

from robustlab.models.base import ImageClassifier
from robustlab.models.mnist_cnn import MNISTCNN
from robustlab.models.normalize import Normalize
from robustlab.models.resnet import ResNet18, ResNet20
from robustlab.models.vgg import VGG16
from robustlab.models.wide_resnet import WideResNet

__all__ = ["ImageClassifier", "Normalize", "MNISTCNN", "ResNet20", "ResNet18", "WideResNet", "VGG16"]
