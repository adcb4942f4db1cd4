"""Common shape of robustlab classifiers: [0,1] images in, logits out."""
from collections.abc import Sequence

import torch
from torch import nn

from robustlab.models.normalize import Normalize


class ImageClassifier(nn.Module):
    """Normalise inside the model, then run ``self.net``; records the input it expects.

    ``in_channels``, ``image_size`` and ``num_classes`` are checked against the datamodule at
    start-up, so that a model built for one dataset is never silently run on another.
    """

    net: nn.Module

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
