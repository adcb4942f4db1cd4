"""A compact PixelCNN (van den Oord et al. 2016, "Pixel recurrent neural networks"): a 256-way
softmax per sub-pixel, autoregressive in raster order over pixels and R < G < B within a pixel."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import RobustlabError

#: Levels of an 8-bit sub-pixel.
LEVELS = 256


def quantise(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit level ``round(255 x)`` (long) of [0,1] values."""
    return (x.clamp(0, 1) * (LEVELS - 1)).round().long()


def _group(index: torch.Tensor, size: int, groups: int) -> torch.Tensor:
    """Colour group of each of ``size`` feature maps: the maps split into ``groups`` consecutive runs."""
    return index * groups // size


class MaskedConv2d(nn.Conv2d):
    """A same-padded conv whose kernel sees only pixels before the centre in raster order and, at
    the centre, input groups before (mask ``"A"``) or up to (``"B"``) the output's group, where the
    ``groups`` colours split input and output maps into equal consecutive runs (PixelCNN Sec. 3.4)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask: str, colours: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        k = kernel_size // 2
        spatial = torch.zeros(kernel_size, kernel_size)
        spatial[:k] = 1
        spatial[k, :k] = 1
        g_out = _group(torch.arange(out_channels), out_channels, colours)[:, None]
        g_in = _group(torch.arange(in_channels), in_channels, colours)[None, :]
        centre = (g_out > g_in) if mask == "A" else (g_out >= g_in)
        full = spatial.expand(out_channels, in_channels, kernel_size, kernel_size).clone()
        full[:, :, k, k] = centre.float()
        self.register_buffer("mask", full, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """``forward(x)``: logits ``(B, 256, C, H, W)`` of every sub-pixel's 8-bit level given the
    sub-pixels before it, for [0,1] images ``(B, C, H, W)``: a 7x7 mask-A conv to ``hidden`` maps,
    ``blocks`` residual blocks ``h + conv3x3_B(relu(h))``, then ReLU, a 1x1 mask-B conv, ReLU and a
    1x1 mask-B conv to ``C x 256`` logits. ``reach`` is how far (rows up, columns either side) an
    output looks, so a crop with that margin gives the same logits."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, blocks: int = 4):
        super().__init__()
        if in_channels < 1 or blocks < 0 or hidden < in_channels:
            raise RobustlabError(
                f"PixelCNN needs in_channels >= 1, blocks >= 0 and hidden >= in_channels, got "
                f"{in_channels}, {blocks} and {hidden}",
                "use e.g. hidden=64, blocks=4",
            )
        c = self.in_channels = in_channels
        self.first = MaskedConv2d(c, hidden, 7, "A", c)
        self.blocks = nn.ModuleList(MaskedConv2d(hidden, hidden, 3, "B", c) for _ in range(blocks))
        self.head = nn.Sequential(
            nn.ReLU(), MaskedConv2d(hidden, hidden, 1, "B", c), nn.ReLU(), MaskedConv2d(hidden, c * LEVELS, 1, "B", c)
        )
        self.reach = 3 + blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(2 * x - 1)
        for block in self.blocks:
            h = h + block(F.relu(h))
        b, _, height, width = x.shape
        return self.head(h).view(b, self.in_channels, LEVELS, height, width).transpose(1, 2)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the 8-bit images ``round(255 x)`` in bits per sub-pixel."""
        levels = quantise(x)
        return F.cross_entropy(self(levels.to(x.dtype) / (LEVELS - 1)), levels) / math.log(2)
