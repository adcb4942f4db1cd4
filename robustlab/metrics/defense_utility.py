"""CAV, CRR, CSR, CCV and COS: a defended model against its raw baseline on the same clean inputs
(DEEPSEC Sec. II-D; comprehensive paper Eqs. 15-19)."""

import torch
from torchmetrics import Metric

from robustlab.metrics.functional import js_divergence, ratio, true_class_confidence


class DefenseUtility(Metric):
    """Shared sum-only counts; ``update(logits, baseline_logits, y)`` with the defended model's and the
    baseline's logits on the same clean batch. Subclasses differ only in :meth:`compute`."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("correct", "base_correct", "recovered", "sacrificed", "both_correct", "total"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("confidence_gap", "divergence"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, baseline_logits: torch.Tensor, y: torch.Tensor) -> None:
        right, base_right = logits.argmax(1) == y, baseline_logits.argmax(1) == y
        both = right & base_right
        self.correct += right.sum()
        self.base_correct += base_right.sum()
        self.recovered += (~base_right & right).sum()
        self.sacrificed += (base_right & ~right).sum()
        self.both_correct += both.sum()
        self.total += y.numel()
        gap = (true_class_confidence(baseline_logits, y) - true_class_confidence(logits, y)).abs()
        jsd = js_divergence(baseline_logits.double().softmax(1), logits.double().softmax(1))
        self.confidence_gap += gap[both].sum()
        self.divergence += jsd[both].sum()


class CAV(DefenseUtility):
    """Classification accuracy variance ``Acc(F^D) - Acc(F)`` over all examples (Eq. 15)."""

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        return ratio(self.correct - self.base_correct, self.total, "CAV")


class CRR(DefenseUtility):
    """Classification rectify ratio: examples the baseline misclassifies and the defended model classifies
    correctly, divided by *all* examples (Eq. 16)."""

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        return ratio(self.recovered, self.total, "CRR")


class CSR(DefenseUtility):
    """Classification sacrifice ratio: examples the baseline classifies correctly and the defended model
    misclassifies, divided by *all* examples (Eq. 17)."""

    higher_is_better = False

    def compute(self) -> torch.Tensor:
        return ratio(self.sacrificed, self.total, "CSR")


class CCV(DefenseUtility):
    """Classification confidence variance ``(1/n) sum_i |P(x_i)_{y_i} - P^D(x_i)_{y_i}|`` over the n examples
    both models classify correctly (Eq. 18)."""

    higher_is_better = False

    def compute(self) -> torch.Tensor:
        return ratio(self.confidence_gap, self.both_correct, "CCV")


class COS(DefenseUtility):
    """Classification output stability ``(1/n) sum_i JSD(P(x_i) || P^D(x_i))`` (Jensen-Shannon divergence in
    nats, :func:`~robustlab.metrics.functional.js_divergence`) over the n examples both models classify
    correctly (Eq. 19)."""

    higher_is_better = False

    def compute(self) -> torch.Tensor:
        return ratio(self.divergence, self.both_correct, "COS")
