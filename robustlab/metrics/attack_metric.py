"""The contract of attack-utility metrics, which the attack callback feeds uniformly."""

import warnings

import torch
from torch import nn
from torchmetrics import Metric

from robustlab.errors import RobustlabError
from robustlab.metrics.functional import ratio
from robustlab.success import attack_success


class AttackMetric(Metric):
    """A metric of one attack's adversarial examples. The attack callback keeps one copy per attack and
    calls ``update(model, x, x_adv, y, clean_logits, adv_logits, target=None)`` on every batch: clean and
    adversarial [0,1] images, labels, the model's logits on both, and the targets of a targeted attack.
    ``model`` (eval mode) is only used by metrics that query it again (RGB, RIC)."""

    full_state_update = False
    is_differentiable = False

    def update(
        self,
        model: nn.Module | None,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        clean_logits: torch.Tensor,
        adv_logits: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> None:
        raise NotImplementedError


class SuccessMean(AttackMetric):
    """Mean of a per-example value over the successful adversarial examples (clean-correct and misclassified,
    or classified as the target: :func:`~robustlab.success.attack_success`, as in MR), DEEPSEC's denominator for
    ACAC, ACTC, ALD_p, ASS, PSD, NTE, RGB and RIC. Subclasses implement :meth:`values`; with ``keys`` set, they return
    one column per key and :meth:`compute` a dict. A NaN value (undefined for that example) is left out of
    its column's average, with a warning. No successful example gives NaN and a warning.

    ``over="all"`` averages over every example instead (the comprehensive paper's Eq. 10-11 for ACTC and NTE
    divide by all n); the default ``"successful"`` is DEEPSEC's."""

    keys: tuple[str, ...] | None = None

    def __init__(self, over: str = "successful", **kwargs):
        super().__init__(**kwargs)
        if over not in ("successful", "all"):
            raise RobustlabError(
                f"unknown {type(self).__name__} denominator over={over!r}",
                "use over=successful (DEEPSEC) or over=all (every example)",
            )
        self.over = over
        shape = () if self.keys is None else (len(self.keys),)
        self.add_state("total", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def values(
        self,
        model: nn.Module | None,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        adv_logits: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-example values, shape ``(m,)`` or ``(m, len(keys))``, of the m successful examples given."""
        raise NotImplementedError

    def update(self, model, x, x_adv, y, clean_logits, adv_logits, target=None) -> None:
        ok = attack_success(clean_logits.argmax(1), adv_logits.argmax(1), y, target)
        if self.over == "all":
            ok = torch.ones_like(ok)
        if not ok.any():
            return
        v = self.values(model, x[ok], x_adv[ok], y[ok], adv_logits[ok], None if target is None else target[ok])
        v = v.double().to(self.total.device)
        defined = ~v.isnan()
        if not defined.all():
            warnings.warn(
                f"{type(self).__name__}: {int((~defined).sum())} undefined value(s) left out of the average",
                RuntimeWarning,
                stacklevel=2,
            )
        self.total += torch.where(defined, v, 0).sum(0)
        self.count += defined.sum(0)

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        name = type(self).__name__
        if self.keys is None:
            return ratio(self.total, self.count, name)
        return {k: ratio(self.total[i], self.count[i], f"{name} {k}") for i, k in enumerate(self.keys)}
