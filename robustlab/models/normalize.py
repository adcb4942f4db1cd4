"""Per-channel normalisation as a model layer, so that every model takes [0,1] images."""

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Subtract ``mean`` and divide by ``std`` per channel; buffers move with the model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
