"""Corruption robustness of the test batches: every corruption x severity, and perturbation sequences for mFR."""

import torch
from torch import nn

from robustlab import progress
from robustlab.corruptions import BENCHMARK, CORRUPTIONS, corrupt, perturbation_sequence
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.record import BatchRecord
from robustlab.metrics import MCE, MFR
from robustlab.rng import Streams


def _resized(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` resized (bilinear) to ``size``; corruptions need >= 32 px, models their own input size."""
    if tuple(x.shape[-2:]) == size:
        return x
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


class Corruption(Evaluation):
    """Errors under ``corruptions`` x ``severities`` (``params`` table), clean errors and, when ``perturbations``
    are given, flip probabilities over sequences of ``sequence_length`` frames. The run's baseline model, when
    given, normalises mCE, RmCE and mFR (Hendrycks); without it they are unnormalised (the CIFAR convention:
    the mean over corruptions x severities, or with ``severity_reduction="sum"`` the comprehensive paper's Eq. 12,
    the sum over severities averaged over corruptions).
    mCE and RmCE come from the :class:`~robustlab.metrics.MCE` metric: the mean over the benchmark corruptions and
    the severities evaluated here (held-out corruptions are reported, not averaged).

    Each sample's randomness is seeded from its seed, the corruption and the severity, so the results do not
    depend on batch size or process count. ``results``: ``mCE``, ``RmCE``, ``mFR`` (None without perturbations),
    ``clean_error``, ``normalised``, ``errors[corruption][severity]``, ``flip_probabilities`` and ``n_samples``.
    Images smaller than 32 px are corrupted at 32 px and resized back to the model's input size."""

    journaled = ("ce", "fr")
    needs_final_iterates = False

    def __init__(
        self,
        corruptions=CORRUPTIONS,
        severities=(1, 2, 3, 4, 5),
        params: str = "cifar",
        perturbations=(),
        sequence_length: int = 10,
        frost_textures: str = "procedural",
        severity_reduction: str = "mean",
    ):
        self.corruptions, self.severities = tuple(corruptions), tuple(int(s) for s in severities)
        self.params, self.perturbations, self.sequence_length = params, tuple(perturbations), int(sequence_length)
        self.frost_textures, self.severity_reduction = frost_textures, severity_reduction

    def setup(self, context: Context) -> None:
        self.ce = MCE(
            corruptions=self.corruptions, severities=max(self.severities), severity_reduction=self.severity_reduction
        ).to(context.device)
        self.fr = MFR(perturbations=self.perturbations).to(context.device) if self.perturbations else None
        self.baseline = context.baseline

    def _both(self, record: BatchRecord, x: torch.Tensor):
        """Predictions of the model and of the baseline (None without one) on corrupted images ``x``."""
        return _predict(record.model, x), _predict(self.baseline, x) if self.baseline is not None else None

    def _sequence(self, record: BatchRecord, frames: torch.Tensor):
        """Predictions ``(B, T)`` of the model and of the baseline on frames ``(B, T, ...)``; a first frame equal
        to the clean image (a zero perturbation) takes the clean predictions instead of another forward pass."""
        x = record.x
        if not torch.equal(frames[:, 0], x):
            preds, base = self._both(record, frames.flatten(0, 1))
            return preds.view(len(x), -1), None if base is None else base.view(len(x), -1)
        preds, base = self._both(record, frames[:, 1:].flatten(0, 1))
        preds = torch.cat([record.clean_pred[:, None], preds.view(len(x), -1)], 1)
        if base is not None:
            base = torch.cat([record.baseline_logits().argmax(1)[:, None], base.view(len(x), -1)], 1)
        return preds, base

    def update(self, record: BatchRecord) -> None:
        x, y, seeds = record.x, record.y, record.seeds
        size = tuple(x.shape[-2:])
        work = _resized(x, (max(32, size[0]), max(32, size[1])))
        base = record.baseline_logits().argmax(1) if self.baseline is not None else None
        self.ce.update(record.clean_pred, y, baseline_preds=base)
        parts = len(self.corruptions) * len(self.severities) + len(self.perturbations)
        for k, name in enumerate(self.corruptions):
            for j, s in enumerate(self.severities):
                with progress.part(k * len(self.severities) + j, parts):
                    gens = Streams(seeds, salt=100 * k + s, device=work.device)
                    xc = corrupt(work, name, s, gens, params=self.params, frost_textures=self.frost_textures)
                    preds, base = self._both(record, _resized(xc, size))
                    self.ce.update(preds, y, name, s, baseline_preds=base)
        for k, name in enumerate(self.perturbations):
            with progress.part(parts - len(self.perturbations) + k, parts):
                streams = Streams(seeds, salt=10_000 + k, device=work.device)
                seq = perturbation_sequence(work, name, self.sequence_length, streams)
                frames = _resized(seq.flatten(0, 1), size).view(*seq.shape[:2], *x.shape[1:])
                preds, base = self._sequence(record, frames)
                self.fr.update(preds, name, base)

    def results(self) -> dict:
        benchmark = any(c in BENCHMARK for c in self.corruptions)
        with self.ce.sync_context():
            errors = self.ce.errors()
            results = {
                "mCE": self.ce.mce().item() if benchmark else None,
                "RmCE": self.ce.rmce().item() if benchmark else None,
                "mFR": None,
                "clean_error": self.ce.clean_error().item(),
                "normalised": self.baseline is not None,
                "errors": {
                    c: {s: errors[i, s - 1].item() for s in self.severities} for i, c in enumerate(self.corruptions)
                },
                "flip_probabilities": {},
                "n_samples": int(self.ce.clean_total),
            }
        if self.fr is not None:
            with self.fr.sync_context():
                results["mFR"] = self.fr.mfr().item()
                fp = self.fr.flip_probabilities()
            results["flip_probabilities"] = {p: fp[i].item() for i, p in enumerate(self.perturbations)}
        return results

    def scalars(self, results: dict) -> dict[str, float]:
        return {k: v for k, v in results.items() if k in ("mCE", "RmCE", "mFR") and v is not None}

    def summary(self, results: dict) -> str:
        c, fmt = results, (lambda v: "n/a" if v is None else f"{v:.4f}")
        return (
            f"corruption: mCE {fmt(c['mCE'])}, RmCE {fmt(c['RmCE'])}, mFR {fmt(c['mFR'])}, "
            f"clean error {c['clean_error']:.4f}"
        )
