"""DEEPSEC's 7-layer MNIST CNN (Carlini & Wagner's architecture)."""

from collections.abc import Sequence

from torch import nn

from robustlab.models.base import ImageClassifier


class MNISTCNN(ImageClassifier):
    """conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10, 3x3 unpadded convs.

    As in DEEPSEC's ``MNIST_CNN``: ReLU after every conv and hidden fc layer, dropout 0.5
    between the two fc200 layers.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
        dropout: float = 0.5,
    ):
        super().__init__(in_channels, num_classes, image_size, mean, std)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"MNISTCNN needs images of at least 12 px, got {image_size}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * side * side, 200),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(200, 200),
            nn.ReLU(),
            nn.Linear(200, num_classes),
        )
