"""The shared base of every defense: a LightningModule around a [0,1]-input classifier."""

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.checkpoint import META_KEY, load_model
from robustlab.metrics import CA
from robustlab.models.base import DefendedModel


def load_frozen(path: str) -> nn.Module:
    """A fixed helper model of a defense (DD's teacher, EAT's static models) from a ``train.py``
    checkpoint: loaded ``weights_only``, in eval mode, with gradients off for its weights. Keep it in
    a plain attribute (e.g. a list) so that it stays out of the defense's state_dict and optimiser."""
    return load_model(path).requires_grad_(False)


class RobustClassifier(L.LightningModule):
    """Trains ``net`` with :meth:`training_loss` (plain cross-entropy here) and logs clean
    ``val/acc`` and ``test/acc``; robust accuracy comes from :class:`AttackCallback`.

    Defenses subclass this and override only what differs (usually :meth:`training_loss`).
    ``optimizer`` and ``scheduler`` are partials from config; a scheduler that takes
    ``total_steps`` (e.g. OneCycleLR) gets the run's number of optimiser steps.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__()
        self.model = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.val_acc, self.test_acc = CA(), CA()
        #: Plain-container metadata saved in every checkpoint (model config, data config, ...).
        self.robustlab_meta: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y)

    def training_step(self, batch, batch_idx):
        loss = self.training_loss(batch[0], batch[1])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch, metric: CA, key: str) -> dict[str, torch.Tensor]:
        x, y = batch[0], batch[1]
        logits = self(x)
        preds = logits.argmax(1)
        metric.update(preds, y)
        self.log(key.replace("acc", "loss"), F.cross_entropy(logits, y), sync_dist=True)
        self.log(key, metric, prog_bar=True)
        return {"preds": preds, "logits": logits.detach()}

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, self.val_acc, "val/acc")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, self.test_acc, "test/acc")

    def after_fit(self, datamodule) -> bool:
        """Run by ``train.py`` once training has finished (e.g. RC's radius search, PixelDefend's switch to
        purified inference); returns whether it changed the model, so that the checkpoint is saved again.
        No-op here."""
        return False

    def own_lr_group(self) -> tuple[nn.Module, float] | None:
        """A submodule whose parameters get their own learning rate (MagNet's autoencoders, PixelDefend's
        PixelCNN) and that rate, or ``None``."""
        return None

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured")
        params, group = list(self.parameters()), self.own_lr_group()
        if group is not None:
            own = {id(p) for p in group[0].parameters()}
            params = [
                {"params": [p for p in params if id(p) not in own]},
                {"params": [p for p in params if id(p) in own], "lr": group[1]},
            ]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        takes_total = "total_steps" in inspect.signature(self.scheduler_factory.func).parameters
        extra = {"total_steps": self.trainer.estimated_stepping_batches} if takes_total else {}
        scheduler = self.scheduler_factory(optimizer, **extra)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = self.robustlab_meta


class PreprocessedClassifier(DefendedModel):
    """``classifier(preprocess(x))`` for a non-differentiable ``preprocess`` (evaluation attacks it with BPDA
    through ``preprocess``/``classifier``). When ``x`` requires a gradient, forward passes
    ``x + (preprocess(x) - x).detach()`` (Athalye et al.'s BPDA with the identity), so gradient attacks get
    the straight-through gradient even unadapted."""

    def __init__(self, net: nn.Module, preprocess: nn.Module):
        super().__init__()
        self.net, self.preprocess = net, preprocess

    @property
    def classifier(self) -> nn.Module:
        return self.net

    def preprocessors(self) -> list[nn.Module]:
        return [self.preprocess]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.preprocess(x)
        if torch.is_grad_enabled() and x.requires_grad:
            z = x + (z - x).detach()
        return self.net(z)


class InferenceDefense(RobustClassifier):
    """A defense whose inference wraps ``net`` (an input transform, a vote): ``self.inference`` is
    ``wrapper(net, **options)``, sharing ``net``, and is what :meth:`forward` runs. The checkpoint
    stores ``{"_target_": wrapper, **options}`` as ``meta["inference"]`` and the wrapper's state as
    ``inference.*``, so ``load_model`` returns the wrapper. ``options`` must be plain values."""

    def __init__(
        self,
        net: nn.Module,
        wrapper: type[nn.Module],
        options: dict[str, Any],
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        self.inference = wrapper(net, **options)
        self.inference_node = {"_target_": f"{wrapper.__module__}.{wrapper.__qualname__}", **options}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inference(x)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = {**self.robustlab_meta, "inference": self.inference_node}
