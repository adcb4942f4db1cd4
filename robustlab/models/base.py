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

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float], std: Sequence[float]
    ):
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class DefendedModel(nn.Module):
    """Base of every model whose inference is more than a network's forward: it declares what an evaluation
    must do to attack it soundly (read by :func:`randomized`, :func:`preprocessors` and :func:`detector`).

    * ``randomized``: the forward is stochastic at inference, so attacks average gradients over draws (EOT).
    * :meth:`preprocessors`: the non-differentiable, shape-preserving input transforms the forward applies
      (``forward(x) == classifier(preprocess(x))``), which attacks pass straight through (BPDA).
    """

    randomized: bool = False

    def preprocessors(self) -> list[nn.Module]:
        return []


class DetectorModel(DefendedModel):
    """A defended model that also flags inputs: ``detect(x)`` is True where ``x`` looks adversarial, at the
    ``threshold`` (a buffer) it was calibrated with."""

    threshold: torch.Tensor

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _defended(model: nn.Module) -> list[DefendedModel]:
    return [m for m in model.modules() if isinstance(m, DefendedModel)]


def randomized(model: nn.Module) -> bool:
    """Whether ``model`` or a submodule declares a stochastic inference (:class:`DefendedModel`)."""
    return any(m.randomized for m in _defended(model))


def preprocessors(model: nn.Module) -> list[nn.Module]:
    """The non-differentiable input transforms ``model`` and its submodules declare (:class:`DefendedModel`)."""
    return [p for m in _defended(model) for p in m.preprocessors()]


def detector(model: nn.Module) -> DetectorModel | None:
    """The detector inside ``model`` (``model`` itself, or the first :class:`DetectorModel` submodule)."""
    return next((m for m in model.modules() if isinstance(m, DetectorModel)), None)
