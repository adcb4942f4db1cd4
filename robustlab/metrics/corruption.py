"""mCE, RmCE and mFR: corruption and perturbation robustness with sum-only states."""
import torch
from torchmetrics import Metric

from robustlab.corruptions import BENCHMARK, PERTURBATIONS
from robustlab.metrics.functional import mean_corruption_error, mean_flip_rate, relative_mean_corruption_error


class _ErrorTable(Metric):
    """Counts of wrong predictions per corruption and severity (and clean), for the model and,
    optionally, a baseline model evaluated on the same images.

    ``update(preds, target, corruption=None, severity=0, baseline_preds=None)``: ``corruption=None`` counts
    clean predictions. The mean runs over ``corruptions`` (default: the 15 benchmark ones); other names
    passed to ``update`` are ignored. Normalised by the baseline when ``baseline_preds`` were given.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, corruptions=BENCHMARK, severities: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.corruptions = tuple(corruptions)
        k, s = len(self.corruptions), severities
        for name, shape in (("wrong", (k, s)), ("base_wrong", (k, s)), ("total", (k, s)), ("base_total", (k, s))):
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("clean_wrong", "base_clean_wrong", "clean_total", "base_clean_total"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, corruption: str | None = None, severity: int = 0,
               baseline_preds: torch.Tensor | None = None) -> None:
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
        """(corruptions, severities) error rates of the model."""
        return self.wrong.double() / self.total.double()

    def _baseline(self):
        if int(self.base_total.min()) == 0:
            return None, None
        return self.base_wrong.double() / self.base_total.double(), self.base_clean_wrong / self.base_clean_total.double().clamp_min(1)


class MCE(_ErrorTable):
    """Mean corruption error (Hendrycks & Dietterich 2019): baseline-normalised ``mean_c sum_s E / sum_s
    E_base`` when baseline predictions were counted, else the unnormalised mean error."""

    def compute(self) -> torch.Tensor:
        return mean_corruption_error(self.errors(), self._baseline()[0])


class RmCE(_ErrorTable):
    """Relative mean corruption error: as :class:`MCE` on the errors minus the clean error."""

    def compute(self) -> torch.Tensor:
        base, base_clean = self._baseline()
        clean = self.clean_wrong / self.clean_total.double()
        return relative_mean_corruption_error(self.errors(), clean, base, base_clean)


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
        return self.flips.double() / self.pairs.double()

    def compute(self) -> torch.Tensor:
        base = self.base_flips.double() / self.base_pairs.double() if int(self.base_pairs.min()) > 0 else None
        return mean_flip_rate(self.flip_probabilities(), base)
