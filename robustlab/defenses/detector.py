"""Shared pieces of the detection defenses (FS, LID, MagNet): the inference wrapper with its
validation-calibrated threshold, and the LightningModule that trains and calibrates it."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from robustlab.checkpoint import META_KEY
from robustlab.defenses.base import RobustClassifier
from robustlab.errors import RobustlabError
from robustlab.models.base import DetectorModel
from robustlab.utils import eval_mode


def plain(value: Any) -> Any:
    """A plain-container copy of a config value (for the checkpoint's inference node)."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def fpr_threshold(scores: torch.Tensor, fpr: float) -> torch.Tensor:
    """The threshold ``t`` (one of ``scores``) such that ``scores > t`` flags at most
    ``floor(fpr * n)`` of the ``n`` clean scores, exactly that many when there are no ties."""
    if not 0 <= fpr < 1:
        raise RobustlabError(f"false-positive rate must lie in [0, 1), got {fpr!r}", "set defense.fpr to e.g. 0.05")
    if scores.numel() == 0:
        raise RobustlabError(
            "no clean validation images to set the detection threshold on",
            "keep a validation split (data.val_size > 0)",
        )
    allowed = math.floor(fpr * scores.numel() + 1e-9)
    return scores.sort(descending=True).values[min(allowed, scores.numel() - 1)]


class Detector(DetectorModel):
    """Inference wrapper of a detector: ``forward`` is the (defended) classifier's prediction and
    ``detect(x)`` flags ``x`` (True = adversarial) when any of its ``scores`` exceeds that score's
    threshold. ``threshold`` is a buffer set by :meth:`calibrate` on clean validation images so that
    each score alone flags ``fpr[i]`` of them (a single ``fpr`` is split evenly over the scores, so
    the union flags at most ``fpr``)."""

    #: Images scored per forward pass.
    chunk = 250

    def __init__(self, net: nn.Module, n_scores: int, fpr: float | Sequence[float] = 0.05):
        super().__init__()
        self.net = net
        fprs = [float(fpr) / n_scores] * n_scores if isinstance(fpr, (int, float)) else [float(f) for f in fpr]
        if len(fprs) != n_scores:
            raise RobustlabError(
                f"{type(self).__name__} has {n_scores} scores but got {len(fprs)} false-positive rates",
                f"give one defense.fpr or a list of {n_scores}",
            )
        self.fpr = fprs
        self.register_buffer("threshold", torch.full((n_scores,), float("nan")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Detection scores ``(B, n_scores)``; higher means more likely adversarial."""
        raise NotImplementedError

    def batched_scores(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self):
            return torch.cat([self.scores(chunk) for chunk in x.split(self.chunk)])

    def calibrate(self, x: torch.Tensor) -> None:
        """Set each score's threshold on clean images ``x`` for its false-positive rate."""
        scores = self.batched_scores(x)
        self.threshold.copy_(torch.stack([fpr_threshold(scores[:, i], f) for i, f in enumerate(self.fpr)]))

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        if torch.isnan(self.threshold).any():
            raise RobustlabError(
                f"{type(self).__name__} has no threshold yet",
                "calibrate it on clean validation images (train.py does this after each validation epoch)",
            )
        if len(x) == 0:
            return torch.zeros(0, dtype=torch.bool, device=x.device)
        return (self.batched_scores(x) > self.threshold).any(1)


class DetectorDefense(RobustClassifier):
    """Trains the classifier (subclasses add their detector's own training terms), then at the end
    of every validation epoch calibrates ``self.inference`` on the clean validation images
    (gathered over processes, ordered by sample index), before the checkpoint is saved.

    ``self.inference`` shares ``net``; its config (``inference_node``, without ``net``) goes to the
    checkpoint's ``meta["inference"]`` and its state to ``inference.*``, so ``load_model`` returns it.
    """

    def __init__(
        self,
        net: nn.Module,
        inference: Detector,
        inference_node: dict[str, Any],
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(net, optimizer, scheduler, scheduler_interval)
        self.inference, self.inference_node = inference, inference_node
        self._val: list[tuple[torch.Tensor, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inference(x)

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx):
        self._val.append((batch[0].detach(), batch[1].detach(), batch[2].detach()))
        return super().validation_step(batch, batch_idx)

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate a per-process tensor over all processes (sizes may differ)."""
        if self.trainer.world_size == 1:
            return t
        counts = self.all_gather(torch.tensor([len(t)], device=t.device)).flatten().tolist()
        padded = t.new_zeros((max(counts), *t.shape[1:]))
        padded[: len(t)] = t
        gathered = self.all_gather(padded)
        return torch.cat([gathered[r, :c] for r, c in enumerate(counts)])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val:
            return
        x, y, idx = (self._gather(torch.cat(parts)) for parts in zip(*self._val))
        order = idx.argsort()
        self._val = []
        with eval_mode(self):
            self.calibrate(x[order], y[order], idx[order])

    def calibrate(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        """Fit the detector on the clean validation split (default: its threshold only)."""
        self.inference.calibrate(x)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = {**self.robustlab_meta, "inference": self.inference_node}
