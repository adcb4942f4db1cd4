"""MR: DEEPSEC's misclassification ratio."""

import torch
from torchmetrics import Metric

from robustlab.metrics.functional import misclassification_ratio
from robustlab.success import attack_success


class MR(Metric):
    """Fraction of clean-correct examples whose adversarial version is misclassified
    (DEEPSEC Sec. II-B). With ``target`` given, success means predicting the target class."""

    full_state_update = False
    higher_is_better = True  # for the attacker
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("fooled", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("clean_correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, clean_preds: torch.Tensor, adv_preds: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> None:
        self.fooled += attack_success(clean_preds, adv_preds, y, target).sum()
        self.clean_correct += (clean_preds == y).sum()

    def compute(self) -> torch.Tensor:
        return misclassification_ratio(self.fooled, self.clean_correct)
