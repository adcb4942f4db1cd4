"""Evaluates test batches under every corruption x severity (and perturbation sequences for mFR)."""
import lightning as L
import torch
from torch import nn

from robustlab.checkpoint import model_on
from robustlab.corruptions import BENCHMARK, CORRUPTIONS, corrupt, perturbation_sequence
from robustlab.metrics import MCE, MFR
from robustlab.utils import eval_mode, progress_bar, step_logits

_MIX = 0x9E3779B97F4A7C15


def sample_generators(seeds: torch.Tensor, salt: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from its seed and ``salt`` (corruption and severity)."""
    return [torch.Generator().manual_seed((int(s) * 1_000_003 + salt * _MIX) % (2 ** 63)) for s in seeds]


def _resized(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` resized (bilinear) to ``size``; corruptions need >= 32 px, models their own input size."""
    if tuple(x.shape[-2:]) == size:
        return x
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


class CorruptionCallback(L.Callback):
    """On test batches ``(x, y, idx)``: errors under ``corruptions`` x ``severities`` (``params`` table),
    clean errors and, when ``perturbations`` are given, flip probabilities over sequences of
    ``sequence_length`` frames. ``baseline`` (a model or a checkpoint path) normalises mCE, RmCE and mFR
    (Hendrycks); without it they are unnormalised (the CIFAR convention). mCE and RmCE come from the
    :class:`~robustlab.metrics.MCE` metric: the mean over the benchmark corruptions and the severities
    evaluated here (held-out corruptions are reported, not averaged).

    Each sample's randomness is seeded from ``seed``, its index, the corruption and the severity, so the
    results do not depend on batch size or process count. At test end ``self.results`` holds ``mCE``,
    ``RmCE``, ``mFR`` (None without perturbations), ``clean_error``, ``errors[corruption][severity]``,
    ``flip_probabilities`` and ``n_samples``. Images smaller than 32 px are corrupted at 32 px and
    resized back to the model's input size.
    """

    def __init__(self, corruptions=CORRUPTIONS, severities=(1, 2, 3, 4, 5), params: str = "cifar",
                 perturbations=(), sequence_length: int = 10, baseline: nn.Module | str | None = None,
                 seed: int = 0, frost_textures: str = "procedural", progress: bool = True):
        super().__init__()
        self.corruptions, self.severities = tuple(corruptions), tuple(int(s) for s in severities)
        self.params, self.perturbations, self.sequence_length = params, tuple(perturbations), int(sequence_length)
        self.baseline_source, self.baseline = baseline, None
        self.seed, self.frost_textures, self.progress = int(seed), frost_textures, progress
        self.results: dict = {}

    @staticmethod
    def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmax(1)

    def on_test_epoch_start(self, trainer, pl_module):
        self.ce = MCE(corruptions=self.corruptions, severities=max(self.severities)).to(pl_module.device)
        self.fr = MFR(perturbations=self.perturbations).to(pl_module.device) if self.perturbations else None
        if self.baseline_source is not None:
            self.baseline = model_on(self.baseline_source, pl_module.device)
        self._bar = progress_bar(trainer, "corruptions", self.progress)

    def _both(self, pl_module, x, logits=None):
        """Predictions of the model (from ``logits`` if given) and of the baseline (None without one)."""
        preds = self._predict(pl_module, x) if logits is None else logits.argmax(1)
        base = self._predict(self.baseline, x) if self.baseline is not None else None
        return preds, base

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        x, y, idx = batch[0], batch[1], batch[2]
        size = tuple(x.shape[-2:])
        work = _resized(x, (max(32, size[0]), max(32, size[1])))
        seeds = idx.long() + (self.seed << 32)
        with eval_mode(pl_module):
            preds, base = self._both(pl_module, x, step_logits(pl_module, outputs, x))
            self.ce.update(preds, y, baseline_preds=base)
            for k, name in enumerate(self.corruptions):
                for s in self.severities:
                    gens = sample_generators(seeds, 100 * k + s)
                    xc = corrupt(work, name, s, gens, params=self.params, frost_textures=self.frost_textures)
                    preds, base = self._both(pl_module, _resized(xc, size))
                    self.ce.update(preds, y, name, s, baseline_preds=base)
            for k, name in enumerate(self.perturbations):
                seq = perturbation_sequence(work, name, self.sequence_length, sample_generators(seeds, 10_000 + k))
                preds, base = self._both(pl_module, _resized(seq.flatten(0, 1), size))
                self.fr.update(preds.view(len(x), -1), name,
                               base.view(len(x), -1) if base is not None else None)
        self._bar.update(1)

    def on_test_epoch_end(self, trainer, pl_module):
        self._bar.close()
        benchmark = any(c in BENCHMARK for c in self.corruptions)
        with self.ce.sync_context():
            errors = self.ce.errors()
            results = {
                "mCE": self.ce.mce().item() if benchmark else None,
                "RmCE": self.ce.rmce().item() if benchmark else None,
                "mFR": None, "clean_error": self.ce.clean_error().item(), "normalised": self.baseline is not None,
                "errors": {c: {s: errors[i, s - 1].item() for s in self.severities}
                           for i, c in enumerate(self.corruptions)},
                "flip_probabilities": {}, "n_samples": int(self.ce.clean_total),
            }
        if self.fr is not None:
            with self.fr.sync_context():
                results["mFR"] = self.fr.mfr().item()
                fp = self.fr.flip_probabilities()
            results["flip_probabilities"] = {p: fp[i].item() for i, p in enumerate(self.perturbations)}
        self.results = results
        log = {f"test/{k}": v for k, v in results.items() if k in ("mCE", "RmCE", "mFR") and v is not None}
        if log:
            pl_module.log_dict(log, sync_dist=False, rank_zero_only=False)
