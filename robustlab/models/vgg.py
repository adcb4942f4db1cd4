"""VGG-16 with batch norm, CIFAR variant: torchvision's feature stack, a 512 -> classes head."""

from collections.abc import Sequence

from torch import nn
from torchvision.models import vgg as tv_vgg

from robustlab.models.base import ImageClassifier
from robustlab.models.resnet import CIFAR_MEAN, CIFAR_STD


class VGG16(ImageClassifier):
    """VGG-16 (configuration D) with BN; five max-pools take 32 px to 1 px, then one linear layer."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
    ):
        super().__init__(in_channels, num_classes, image_size, mean, std)
        features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=True)
        features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        self.net = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
