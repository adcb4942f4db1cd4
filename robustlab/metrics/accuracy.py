"""CA: classification accuracy with an exact sample count."""

import torch
from torchmetrics import Metric

from robustlab.metrics.functional import classification_accuracy


class CA(Metric):
    """Accuracy ``sum 1[pred = y] / N``. Used for clean accuracy and, fed adversarial
    predictions, for robust accuracy. ``total`` is the exact number of samples seen."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (preds == target).sum()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        return classification_accuracy(self.correct, self.total)
