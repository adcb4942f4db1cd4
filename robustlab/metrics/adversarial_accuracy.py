"""AAW and AAB: accuracy under white-box and black-box attacks (comprehensive paper, Sec. III-B-1)."""

import torch

from robustlab.metrics.attack_metric import AttackMetric
from robustlab.metrics.functional import ratio


class AAW(AttackMetric):
    """Adversarial accuracy under a white-box attack (comprehensive paper Eq. 8, "the percentage of
    adversarial examples classified correctly"): the share of *all* samples classified correctly both clean
    and under the attack, i.e. the report's ``robust_accuracy``. ``total`` is the exact sample count. Eq. 8 as
    printed counts ``F(x_adv) != y``, the errors: a typo against the text's definition, which is followed."""

    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, model, x, x_adv, y, clean_logits, adv_logits, target=None) -> None:
        self.correct += ((clean_logits.argmax(1) == y) & (adv_logits.argmax(1) == y)).sum()
        self.total += y.numel()

    def compute(self) -> torch.Tensor:
        return ratio(self.correct, self.total, type(self).__name__)


class AAB(AAW):
    """Adversarial accuracy under a black-box (gradient-free or transfer) attack: as :class:`AAW`."""
