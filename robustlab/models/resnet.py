"""CIFAR ResNets: ResNet-20 (He et al. 2016, 3 stages of 3 blocks) and the CIFAR variant of
ResNet-18 (torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool)."""

from collections.abc import Sequence

from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.resnet import BasicBlock

from robustlab.models.base import ImageClassifier

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or in_planes != planes:
        down = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    layers = [BasicBlock(in_planes, planes, stride, down)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet20(ImageClassifier):
    """ResNet-20 for 32x32 images: 16-32-64 channels, 3 basic blocks per stage, projection
    shortcuts (option B) where the shape changes."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        blocks: int = 3,
    ):
        super().__init__(in_channels, num_classes, image_size, mean, std)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            _stage(16, 16, blocks, 1),
            _stage(16, 32, blocks, 2),
            _stage(32, 64, blocks, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, num_classes),
        )


class ResNet18(ImageClassifier):
    """ResNet-18, CIFAR variant: 3x3 stride-1 first conv and no max-pool."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
    ):
        super().__init__(in_channels, num_classes, image_size, mean, std)
        net = tv_resnet.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        self.net = net
