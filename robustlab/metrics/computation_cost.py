"""CC: DEEPSEC's computation cost of an attack."""

import torch
from torchmetrics import Metric

from robustlab.metrics.functional import ratio


class CC(Metric):
    """Seconds of adversarial-example generation per example (DEEPSEC Sec. II-B, CC), measured
    with ``time.perf_counter`` around the attack call. ``seconds`` sums over processes."""

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("seconds", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, seconds: float, n: int) -> None:
        self.seconds += seconds
        self.count += n

    def compute(self) -> torch.Tensor:
        return ratio(self.seconds, self.count, "CC")
