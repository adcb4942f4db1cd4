"""Optimisation attacks with a per-example binary search on the constant c: CW2 and EAD."""

import math

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import Attack, check_count, check_eps, margin, per_example
from robustlab.errors import RobustlabError


class _BinarySearchAttack(Attack):
    """Shared parts: per-example constants ``c`` (start ``c0``; x10 until the first success, then
    bisection between the largest failing and smallest successful value, as in Carlini & Wagner's
    code), per-example best result, clean image where no constant succeeded.

    ``last_iterations``: per example, the optimisation iteration (counted over all binary-search
    steps) at which its returned example was found; ``0`` where it failed.
    """

    clean_on_failure = True

    def __init__(
        self, kappa: float, c0: float, lr: float, steps: int, binary_steps: int, abort_early: bool, targeted: bool
    ):
        super().__init__()
        self.kappa, self.c0, self.lr = check_eps(kappa, "kappa"), check_eps(c0, "c0"), check_eps(lr, "lr")
        self.steps, self.binary_steps = check_count(steps, "steps"), check_count(binary_steps, "binary_steps")
        self.abort_early, self.targeted = bool(abort_early), bool(targeted)

    def _goal(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        m = margin(logits, label, self.targeted)
        return (m < 0) & (m <= -self.kappa)

    def _search(self, run_one, x: torch.Tensor) -> torch.Tensor:
        """``run_one(c, state)`` optimises with constants ``c`` and updates ``state`` in place
        (``best``, ``logits``, ``score``, ``found``, ``iters``, ``offset``). Returns the best examples and their
        logits (``None`` if no iterate was recorded)."""
        n = len(x)
        c = torch.full((n,), self.c0, device=x.device, dtype=x.dtype)
        lo, hi = torch.zeros_like(c), torch.full_like(c, math.inf)
        state = {
            "best": x.clone(),
            "score": torch.full_like(c, math.inf),
            "iters": torch.zeros(n, dtype=torch.long, device=x.device),
            "offset": 0,
        }
        for b in range(self.binary_steps):
            if self.binary_steps >= 10 and b == self.binary_steps - 1:
                c = torch.where(torch.isinf(hi), c, hi)
            state["found"] = torch.zeros(n, dtype=torch.bool, device=x.device)
            with progress.part(b, self.binary_steps):
                run_one(c, state)
            found = state["found"]
            hi = torch.where(found, torch.minimum(hi, c), hi)
            lo = torch.where(found, lo, torch.maximum(lo, c))
            c = torch.where(torch.isinf(hi), c * 10, (lo + hi) / 2)
        self.last_success = torch.isfinite(state["score"])
        self.last_iterations = state["iters"]
        return state["best"], state.get("logits")

    def _keep_found(self, logits: torch.Tensor | None) -> None:
        """Hand over the logits of the examples the search found (those of ``last_success``)."""
        if logits is not None and self.last_success.any():
            self.keep_logits(self.last_success, logits[self.last_success])

    def _record(
        self, state, x_k: torch.Tensor, logits: torch.Tensor, ok: torch.Tensor, score: torch.Tensor, it: int
    ) -> None:
        """Keep, per example, the iterate ``x_k`` (with its ``logits``) if it meets the goal (``ok``) with a
        lower ``score`` than the best so far."""
        state["found"] |= ok
        better = ok & (score < state["score"])
        state["score"] = torch.where(better, score, state["score"])
        state["best"] = torch.where(per_example(better, x_k), x_k, state["best"])
        state["logits"] = (
            torch.where(better[:, None], logits, state["logits"])
            if "logits" in state
            else torch.where(better[:, None], logits, 0)
        )
        state["iters"] = torch.where(better, state["offset"] + it + 1, state["iters"])


class CW2(_BinarySearchAttack):
    """Carlini & Wagner's L2 attack (S&P 2017): minimise ``||x' - x||_2^2 + c * f(x')`` over
    ``x' = (tanh(w) + 1) / 2`` with Adam, ``f = max(max_{i!=t} Z_i - Z_t, -kappa)`` (targeted) or
    ``max(Z_y - max_{i!=y} Z_i, -kappa)`` (untargeted). Per example, keeps the smallest-L2
    iterate reaching the goal with margin ``kappa``. Adam as in Kingma & Ba (Alg. 1, epsilon on the
    bias-corrected root);  ``abort_early`` stops a binary-search step once
    the loss has not fallen by 0.01% over a tenth of ``steps`` (Carlini's rule).

    DEEPSEC: targeted (random wrong class), kappa 0 (the paper also uses 20), c0 0.001, Adam
    lr 0.02, 10000 iterations, 10 binary-search steps. Failures return the clean image.
    """

    name = "cw2"
    minimal_norm = "l2"

    def __init__(
        self,
        kappa: float = 0.0,
        c0: float = 1e-3,
        lr: float = 0.02,
        steps: int = 10000,
        binary_steps: int = 10,
        abort_early: bool = True,
        targeted: bool = True,
    ):
        super().__init__(kappa, c0, lr, steps, binary_steps, abort_early, targeted)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        label = target if self.targeted else y
        w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        check_every = max(1, self.steps // 10)

        def run_one(c, state):
            w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
            previous = math.inf
            for i in range(self.steps):
                progress.step(i, self.steps)
                w.requires_grad_(True)
                x_k = (torch.tanh(w) + 1) / 2
                logits = model(x_k)
                dist = (x_k - x).pow(2).flatten(1).sum(1)
                loss = (dist + c * margin(logits, label, self.targeted).clamp_min(-self.kappa)).sum()
                (grad,) = torch.autograd.grad(loss, w)
                w = w.detach()
                logits = logits.detach()
                self._record(state, x_k.detach(), logits, self._goal(logits, label), dist.detach(), i)
                if self.abort_early and i % check_every == 0:
                    value = loss.item()
                    if value > previous * 0.9999:
                        break
                    previous = value
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v / (1 - beta2 ** (i + 1))).sqrt_().add_(adam_eps)
                w.addcdiv_(m, denom, value=-self.lr / (1 - beta1 ** (i + 1)))
            state["offset"] += self.steps

        best, logits = self._search(run_one, x)
        self._keep_found(logits)
        return best


class EAD(_BinarySearchAttack):
    """Elastic-net attack (Chen et al., AAAI 2018): minimise ``c * f(x') + ||x' - x||_2^2 +
    beta * ||x' - x||_1`` on [0,1] by FISTA: a gradient step on the smooth part at the slack point
    ``y_k`` with square-root decaying rate ``lr * (1 - k/steps)**0.5``, the projected
    shrinkage-thresholding operator for the L1 term, and momentum ``k / (k + 3)``.
    ``f`` is CW2's margin loss. ``decision_rule`` picks, per example, the successful iterate of
    least elastic-net distance ``beta * L1 + L2^2`` (``"EN"``) or least L1 (``"L1"``).

    DEEPSEC: targeted (random wrong class), kappa 0, beta 1e-3, c0 0.001, lr 0.02, 5
    binary-search steps; ``steps`` 1000 follows the EAD paper (DEEPSEC lists none).
    Failures return the clean image.
    """

    name = "ead"
    minimal_norm = "l1"

    def __init__(
        self,
        kappa: float = 0.0,
        beta: float = 1e-3,
        c0: float = 1e-3,
        lr: float = 0.02,
        steps: int = 1000,
        binary_steps: int = 5,
        decision_rule: str = "EN",
        abort_early: bool = True,
        targeted: bool = True,
    ):
        super().__init__(kappa, c0, lr, steps, binary_steps, abort_early, targeted)
        self.beta = check_eps(beta, "beta")
        if decision_rule not in ("EN", "L1"):
            raise RobustlabError(f"unknown decision_rule {decision_rule!r}", "use EN or L1")
        self.decision_rule = decision_rule

    def _shrink(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = z - x
        return torch.where(
            d > self.beta, (z - self.beta).clamp(max=1), torch.where(d < -self.beta, (z + self.beta).clamp(min=0), x)
        )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        label = target if self.targeted else y
        check_every = max(1, self.steps // 10)

        def run_one(c, state):
            x_k, y_k = x.clone(), x.clone()
            previous = math.inf
            for i in range(self.steps):
                progress.step(i, self.steps)
                y_k.requires_grad_(True)
                logits = model(y_k)
                diff = (y_k - x).flatten(1)
                smooth = (diff.pow(2).sum(1) + c * margin(logits, label, self.targeted).clamp_min(-self.kappa)).sum()
                (grad,) = torch.autograd.grad(smooth, y_k)
                if self.abort_early and i % check_every == 0:
                    value = smooth.item() + self.beta * diff.detach().abs().sum().item()
                    if value > previous * 0.9999:
                        break
                    previous = value
                rate = self.lr * (1 - i / self.steps) ** 0.5
                x_new = self._shrink(y_k.detach() - rate * grad, x)
                y_k = x_new + i / (i + 3) * (x_new - x_k)
                x_k = x_new
                with torch.no_grad():
                    logits = model(x_k)
                delta = (x_k - x).flatten(1)
                l1 = delta.abs().sum(1)
                score = l1 if self.decision_rule == "L1" else self.beta * l1 + delta.pow(2).sum(1)
                self._record(state, x_k, logits, self._goal(logits, label), score, i)
            state["offset"] += self.steps

        best, logits = self._search(run_one, x)
        self._keep_found(logits)
        return best
