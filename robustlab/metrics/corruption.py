"""mCE, RmCE and mFR: corruption and perturbation robustness with sum-only states."""

import warnings

import torch
from torchmetrics import Metric

from robustlab.corruptions import BENCHMARK, PERTURBATIONS
from robustlab.metrics.functional import mean_corruption_error, mean_flip_rate, ratio, relative_mean_corruption_error


class _ErrorTable(Metric):
    """Counts of wrong predictions per corruption and severity (and clean), for the model and,
    optionally, a baseline model evaluated on the same images.

    ``update(preds, target, corruption=None, severity=0, baseline_preds=None)``: ``corruption=None`` counts
    clean predictions; names outside ``corruptions`` are ignored. The mean runs over what was evaluated:
    the benchmark corruptions among ``corruptions`` that received counts (held-out ones are tabulated, never
    averaged, as in Hendrycks & Dietterich) and the severities that received counts, so evaluating a subset
    gives the mean over that subset. Normalised by the baseline when baseline predictions were counted.
    ``mce()`` and ``rmce()`` read the current counts (the synced ones inside ``sync_context()``).
    ``severities`` (unnormalised only): ``"mean"`` over corruptions x severities (default, the CIFAR-10-C
    convention) or ``"sum"`` over severities, then the mean over corruptions (the comprehensive paper's Eq. 12).
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, corruptions=BENCHMARK, severities: int = 5, severity_reduction: str = "mean", **kwargs):
        super().__init__(**kwargs)
        self.corruptions, self.severity_reduction = tuple(corruptions), severity_reduction
        k, s = len(self.corruptions), severities
        for name, shape in (("wrong", (k, s)), ("base_wrong", (k, s)), ("total", (k, s)), ("base_total", (k, s))):
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("clean_wrong", "base_clean_wrong", "clean_total", "base_clean_total"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        preds: torch.Tensor,
        target: torch.Tensor,
        corruption: str | None = None,
        severity: int = 0,
        baseline_preds: torch.Tensor | None = None,
    ) -> None:
        if corruption is not None and corruption not in self.corruptions:
            return
        wrong = (preds != target).sum()
        base = (baseline_preds != target).sum() if baseline_preds is not None else None
        n = target.numel()
        if corruption is None:
            self.clean_wrong += wrong
            self.clean_total += n
            if base is not None:
                self.base_clean_wrong += base
                self.base_clean_total += n
            return
        i, j = self.corruptions.index(corruption), int(severity) - 1
        self.wrong[i, j] += wrong
        self.total[i, j] += n
        if base is not None:
            self.base_wrong[i, j] += base
            self.base_total[i, j] += n

    def errors(self) -> torch.Tensor:
        """(corruptions, severities) error rates of the model; NaN where nothing was counted."""
        return self.wrong.double() / self.total.double()

    def clean_error(self) -> torch.Tensor:
        return ratio(self.clean_wrong, self.clean_total, "clean error")

    def _evaluated(self) -> tuple[list[int], list[int]] | None:
        """Rows (benchmark corruptions with counts) and columns (severities with counts) the mean runs over;
        None, with a warning, when no benchmark corruption was evaluated."""
        counted = self.total > 0
        rows = [i for i, c in enumerate(self.corruptions) if c in BENCHMARK and bool(counted[i].any())]
        if not rows:
            warnings.warn("mCE: no benchmark corruption was evaluated, returning NaN", RuntimeWarning, stacklevel=3)
            return None
        cols = counted[rows].any(0).nonzero().flatten().tolist()
        if not bool(counted[rows][:, cols].all()):
            warnings.warn(
                "mCE: the evaluated corruptions do not share the same severities; the table has gaps, returning NaN",
                RuntimeWarning,
                stacklevel=3,
            )
        return rows, cols

    def _tables(self, rows, cols):
        """Model and baseline error tables on the evaluated cells (baseline None if it was never counted)."""
        errors = self.errors()[rows][:, cols]
        base_counted = self.base_total[rows][:, cols] > 0
        if not bool(base_counted.any()):
            return errors, None
        if not bool(base_counted.all()):
            warnings.warn(
                "mCE: the baseline was not evaluated on every evaluated cell, returning NaN",
                RuntimeWarning,
                stacklevel=3,
            )
        return errors, (self.base_wrong.double() / self.base_total.double())[rows][:, cols]

    def mce(self) -> torch.Tensor:
        cells = self._evaluated()
        if cells is None:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return mean_corruption_error(*self._tables(*cells), severities=self.severity_reduction)

    def rmce(self) -> torch.Tensor:
        cells = self._evaluated()
        if cells is None:
            return torch.tensor(float("nan"), dtype=torch.float64)
        errors, base = self._tables(*cells)
        base_clean = (
            ratio(self.base_clean_wrong, self.base_clean_total, "baseline clean error") if base is not None else None
        )
        return relative_mean_corruption_error(errors, self.clean_error(), base, base_clean, self.severity_reduction)


class MCE(_ErrorTable):
    """Mean corruption error (Hendrycks & Dietterich 2019): baseline-normalised ``mean_c sum_s E / sum_s
    E_base`` when baseline predictions were counted, else the unnormalised mean error."""

    def compute(self) -> torch.Tensor:
        return self.mce()


class RmCE(_ErrorTable):
    """Relative mean corruption error: as :class:`MCE` on the errors minus the clean error."""

    def compute(self) -> torch.Tensor:
        return self.rmce()


class MFR(Metric):
    """Mean flip rate over perturbation sequences (Hendrycks & Dietterich 2019, ImageNet-P / CIFAR-10-P).

    ``update(preds, perturbation, baseline_preds=None)`` with ``preds`` (B, T) predicted classes along each
    sequence. Flips are counted between consecutive frames, or against frame 0 for noise sequences
    (``PERTURBATIONS``). Normalised by the baseline's flip probability when baseline predictions were given.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, perturbations=tuple(PERTURBATIONS), **kwargs):
        super().__init__(**kwargs)
        self.perturbations = tuple(perturbations)
        k = len(self.perturbations)
        for name in ("flips", "base_flips", "pairs", "base_pairs"):
            self.add_state(name, torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    @staticmethod
    def _flips(preds: torch.Tensor, against_first: bool) -> torch.Tensor:
        ref = preds[:, :1] if against_first else preds[:, :-1]
        return (preds[:, 1:] != ref).sum()

    def update(self, preds: torch.Tensor, perturbation: str, baseline_preds: torch.Tensor | None = None) -> None:
        i = self.perturbations.index(perturbation)
        first = PERTURBATIONS.get(perturbation) == "first"
        pairs = preds.shape[0] * (preds.shape[1] - 1)
        self.flips[i] += self._flips(preds, first)
        self.pairs[i] += pairs
        if baseline_preds is not None:
            self.base_flips[i] += self._flips(baseline_preds, first)
            self.base_pairs[i] += pairs

    def flip_probabilities(self) -> torch.Tensor:
        """Per-perturbation flip probabilities; NaN where nothing was counted."""
        return self.flips.double() / self.pairs.double()

    def mfr(self) -> torch.Tensor:
        """mFR over the perturbations that received counts (the current, or inside ``sync_context()`` the
        synced, counts); NaN with a warning if none did."""
        used = (self.pairs > 0).nonzero().flatten()
        if used.numel() == 0:
            warnings.warn("mFR: no perturbation sequence was evaluated, returning NaN", RuntimeWarning, stacklevel=2)
            return torch.tensor(float("nan"), dtype=torch.float64)
        base = None
        if int(self.base_pairs[used].sum()) > 0:
            base = (self.base_flips.double() / self.base_pairs.double())[used]
        return mean_flip_rate(self.flip_probabilities()[used], base)

    def compute(self) -> torch.Tensor:
        return self.mfr()
