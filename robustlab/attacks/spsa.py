"""SPSA (Uesato et al. 2018): a gradient-free Linf attack, Adam on a finite-difference gradient
estimate of the margin loss."""

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import (
    MAX_BATCH,
    Attack,
    check_count,
    check_eps,
    margin,
    query,
    retire,
)
from robustlab.errors import RobustlabError
from robustlab.rng import Streams


class SPSA(Attack):
    """SPSA attack (Uesato et al. 2018, "Adversarial Risk and the Dangers of Evaluating Against
    Weak Attacks"), Linf: minimises the margin loss ``Z_y - max_{i!=y} Z_i`` (targeted:
    ``max_{i!=t} Z_i - Z_t``) with Adam (``lr``) on the SPSA estimate
    ``mean_k (L(x + delta v_k) - L(x - delta v_k)) / (2 delta) * v_k`` over ``samples`` Rademacher
    vectors ``v_k`` per step, projecting onto the ``eps`` ball and [0,1] after each step.
    ``random_start`` begins at a uniform point of the ball (as the CleverHans reference does).

    Each example stops at the first iterate that meets the goal. Per example, ``last_queries``
    counts model queries (one check of the iterate per step plus ``2 * samples`` per estimate,
    at most :attr:`max_queries`) and ``last_iterations`` the step at which the goal was met
    (0 = the start point) or ``steps + 1``. Randomness is seeded per example by ``seeds``.
    """

    name = "spsa"
    kind = "blackbox"

    def __init__(
        self,
        eps: float = 0.3,
        steps: int = 100,
        samples: int = 128,
        delta: float = 0.01,
        lr: float = 0.01,
        random_start: bool = True,
        targeted: bool = False,
    ):
        super().__init__()
        self.eps, self.steps = check_eps(eps), check_count(steps, "steps", 0)
        self.samples = check_count(samples, "samples")
        self.delta, self.lr = check_eps(delta, "delta"), check_eps(lr, "lr")
        if self.delta == 0:
            raise RobustlabError("delta must be > 0", "set the finite-difference size delta, e.g. 0.01")
        self.random_start, self.targeted = random_start, bool(targeted)

    @property
    def max_queries(self) -> int:
        """The most model queries one example can cost."""
        return (self.steps + 1) + self.steps * 2 * self.samples

    def _gradient(self, model, x_adv, label, streams, rows) -> torch.Tensor:
        v = streams.draw("rademacher", (self.samples, *x_adv.shape[1:]), x_adv, rows)
        points = torch.cat([x_adv[:, None] + self.delta * v, x_adv[:, None] - self.delta * v], 1).clamp(0, 1)
        labels = label.repeat_interleave(2 * self.samples)
        loss = margin(query(model, points.flatten(0, 1)), labels, self.targeted).view(len(x_adv), 2, self.samples)
        slope = (loss[:, 0] - loss[:, 1]) / (2 * self.delta)
        return (slope.view(*slope.shape, *[1] * (v.dim() - 2)) * v).mean(1)

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        label = y if target is None else target
        streams = Streams(seeds, len(x), x.device)
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x + (2 * streams.draw("uniform", x.shape[1:], x) - 1) * self.eps).clamp(0, 1)
        moment, second = torch.zeros_like(x), torch.zeros_like(x)
        queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
        first = torch.full((len(x),), self.steps + 1, device=x.device)
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        per_chunk = max(1, MAX_BATCH // (2 * self.samples))
        beta1, beta2 = 0.9, 0.999
        for t in range(self.steps + 1):
            progress.step(t, self.steps)
            idx = retire(self, model, x_adv, y, target, active, first, queries, t)
            if t == self.steps or len(idx) == 0:
                break
            for chunk in idx.split(per_chunk):
                grad = self._gradient(model, x_adv[chunk], label[chunk], streams, chunk)
                moment[chunk] = beta1 * moment[chunk] + (1 - beta1) * grad
                second[chunk] = beta2 * second[chunk] + (1 - beta2) * grad**2
                update = (moment[chunk] / (1 - beta1 ** (t + 1))) / (
                    (second[chunk] / (1 - beta2 ** (t + 1))).sqrt() + 1e-8
                )
                step = (x_adv[chunk] - self.lr * update - x[chunk]).clamp(-self.eps, self.eps)
                x_adv[chunk] = (x[chunk] + step).clamp(0, 1)
            queries[idx] += 2 * self.samples
        self.last_success, self.last_iterations, self.last_queries = first <= self.steps, first, queries
        return x_adv
