"""Wide ResNet (Zagoruyko & Komodakis 2016), WRN-28-10 by default, pre-activation blocks."""

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.models.base import ImageClassifier
from robustlab.models.resnet import CIFAR_MEAN, CIFAR_STD


class _WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(in_planes), nn.BatchNorm2d(planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        return skip + self.conv2(self.drop(self.relu(self.bn2(self.conv1(o)))))


class WideResNet(ImageClassifier):
    """WRN-depth-width: (depth-4)/6 pre-activation blocks per stage, widths 16k, 32k, 64k."""

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        dropout: float = 0.0,
    ):
        super().__init__(in_channels, num_classes, image_size, mean, std)
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * width, 32 * width, 64 * width]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        for stage in range(3):
            for i in range(n):
                layers.append(
                    _WideBlock(
                        widths[stage] if i == 0 else widths[stage + 1],
                        widths[stage + 1],
                        (1 if stage == 0 else 2) if i == 0 else 1,
                        dropout,
                    )
                )
        layers += [
            nn.BatchNorm2d(widths[3]),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(widths[3], num_classes),
        ]
        self.net = nn.Sequential(*layers)
