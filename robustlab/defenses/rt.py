"""RT: randomization at inference (Xie et al. 2018, "Mitigating adversarial effects through
randomization"; DEEPSEC's RT)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses.base import InferenceDefense
from robustlab.defenses.transforms import resize_pad
from robustlab.errors import RobustlabError
from robustlab.models.base import DefendedModel


class RandomResizePad(DefendedModel):
    """``net(resize_pad(x))``: every call resizes each image to a random side in ``[size, final)``
    and pads it at a random offset to ``final`` x ``final`` (see :func:`resize_pad`).

    Stochastic (``randomized``: attack it with EOT) but differentiable, so no BPDA is needed. The
    classifier must accept ``final``-px inputs (DEEPSEC's MNIST CNN and the ResNets do)."""

    randomized = True

    def __init__(self, net: nn.Module, final: int = 31, pad_value: float = 0.0):
        super().__init__()
        self.net, self.final, self.pad_value = net, int(final), float(pad_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] >= self.final:
            raise RobustlabError(
                f"RT pads to {self.final} px but the images are already {x.shape[-1]} px",
                "set defense.final larger than the image size (31 MNIST, 36 CIFAR-10)",
            )
        return self.net(resize_pad(x, self.final, self.pad_value))


class RT(InferenceDefense):
    """Random resizing and padding (:class:`RandomResizePad`, ``final`` 31 MNIST / 36 CIFAR-10) in
    front of ``net`` at inference. As in Xie et al. and DEEPSEC the classifier is trained on clean
    images (``train_transformed=false``); ``true`` trains it on randomized ones.

    Padding is with ``pad_value`` 0, as Xie et al.'s code (DEEPSEC pads with 0.5 gray)."""

    def __init__(
        self,
        net: nn.Module,
        final: int = 31,
        pad_value: float = 0.0,
        train_transformed: bool = False,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(
            net,
            RandomResizePad,
            {"final": int(final), "pad_value": float(pad_value)},
            optimizer,
            scheduler,
            scheduler_interval,
        )
        self.train_transformed = train_transformed

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.inference(x) if self.train_transformed else self.model(x), y)
