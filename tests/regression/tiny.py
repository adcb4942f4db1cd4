"""A tiny MNIST classifier for the regression fixtures: small checkpoints, fast evaluations."""

from collections.abc import Sequence

from torch import nn

from robustlab.models.base import ImageClassifier


class TinyCNN(ImageClassifier):
    """conv4-pool-conv8-adaptive pool to 5x5-fc16-fc10 (3x3 unpadded convs, ReLU): about 4k parameters; any
    input of at least 16 px (RT pads to 31 px)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ):
        super().__init__(in_channels, num_classes, image_size, mean, std)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(5),
            nn.Flatten(),
            nn.Linear(8 * 5 * 5, 16),
            nn.ReLU(),
            nn.Linear(16, num_classes),
        )
