"""MR: DEEPSEC's misclassification ratio."""
import torch
from torchmetrics import Metric

from robustlab.metrics.functional import misclassification_ratio


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

    def update(self, clean_preds: torch.Tensor, adv_preds: torch.Tensor, y: torch.Tensor,
               target: torch.Tensor | None = None) -> None:
        valid = clean_preds == y
        success = adv_preds == target if target is not None else adv_preds != y
        self.fooled += (valid & success).sum()
        self.clean_correct += valid.sum()

    def compute(self) -> torch.Tensor:
        return misclassification_ratio(self.fooled, self.clean_correct)
