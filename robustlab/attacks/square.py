"""Square Attack (Andriushchenko et al., ECCV 2020): score-based random search, Linf and L2."""

import math
from functools import cache

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import (
    Attack,
    check_count,
    check_eps,
    check_norm,
    lp_norm,
    margin,
    per_example,
)
from robustlab.errors import RobustlabError
from robustlab.rng import Streams
from robustlab.success import goal_met


class _Streams:
    """Uniform random rows, one per active example per call, drawn in chunks of ``chunk`` rows from each
    example's stream (:class:`~robustlab.rng.Streams`): each example's sequence depends only on its seed,
    whatever the batch."""

    def __init__(self, seeds: torch.Tensor | None, n: int, device, chunk: int = 128):
        self.streams, self.chunk = Streams(seeds, n, device), chunk
        self.buffer, self.pos = None, 0

    def draw(self, width: int, rows: int = 1) -> torch.Tensor:
        return self.streams.uniform(rows, width)

    def next(self, width: int) -> torch.Tensor:
        if self.buffer is None or self.pos == self.chunk:
            self.buffer, self.pos = self.draw(width, self.chunk), 0
        self.pos += 1
        return self.buffer[:, self.pos - 1]

    def keep(self, mask: torch.Tensor) -> None:
        self.streams.keep(mask)
        if self.buffer is not None:
            self.buffer = self.buffer[mask]


def _rings(a: int, b: int) -> torch.Tensor:
    """An ``a x b`` block of concentric squares around its centre, weight ``sum_{k>=d} 1/(k+1)^2`` at
    Chebyshev distance ``d`` (Andriushchenko et al.'s L2 update profile), unit L2 norm."""
    ca, cb = a // 2, b // 2
    d = torch.maximum((torch.arange(a)[:, None] - ca).abs(), (torch.arange(b)[None, :] - cb).abs())
    k = torch.arange(max(ca, cb) + 1, dtype=torch.float32)
    tail = (1 / (k + 1) ** 2).flip(0).cumsum(0).flip(0)
    block = tail[d]
    return block / block.norm()


@cache
def square_profile(s: int) -> torch.Tensor:
    """The ``s x s`` L2 proposal: a positive ring block on the top half, a negative one below."""
    block = torch.cat([_rings(s // 2, s), -_rings(s - s // 2, s)])
    return block / block.norm()


class Square(Attack):
    """Square Attack: random search over square-shaped updates on the margin loss
    ``z_y - max_{i!=y} z_i``, keeping a proposal when it lowers the loss, until misclassified.

    * ``norm="linf"``: start from vertical stripes of ``+-eps``; each proposal sets a random
      ``s x s`` window (per channel a random sign) to ``x +- eps``.
    * ``norm="l2"``: start from a 5x5 grid of ring blocks, then move L2 mass between two random
      windows (Alg. 3 of the paper), keeping ``||delta||_2 = eps``.
    * Window side ``s = round(sqrt(p * h * w))`` with ``p`` falling from ``p_init`` (0.8) by halves
      after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query schedule,
      rescaled to ``n_queries`` when ``rescale_schedule`` (default, as the Square paper's code and
      torchattacks; AutoAttack runs its own Square unrescaled, and so does robustlab's AutoAttack).

    Windows and signs are drawn per example from its seed. The search runs ``n_queries - 2``
    iterations per example (after the clean prediction and the start point); a proposal that leaves
    the image unchanged (common for small Linf windows) is not sent to the model, as its loss is
    known, so ``last_queries`` (model queries per example) can stay below ``n_queries``.
    ``last_iterations`` holds the search iterations.
    """

    name = "square"
    kind = "blackbox"

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        rescale_schedule: bool = True,
    ):
        super().__init__()
        self.eps, self.norm = check_eps(eps), check_norm(norm, ("linf", "l2"))
        self.n_queries = check_count(n_queries, "n_queries", 2)
        if not 0 < p_init <= 1:
            raise RobustlabError(f"p_init must lie in (0, 1], got {p_init!r}", "use 0.8 (Andriushchenko et al.)")
        self.p_init, self.rescale_schedule = float(p_init), bool(rescale_schedule)

    @property
    def max_queries(self) -> int:
        return self.n_queries

    def _p(self, it: int) -> float:
        if self.rescale_schedule:
            it = int(it / self.n_queries * 10000)
        return self.p_init / 2 ** sum(it > t for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))

    def _side(self, it: int, h: int, w: int) -> int:
        s = max(int(round(math.sqrt(self._p(it) * h * w))), 1 if self.norm == "linf" else 3)
        return min(s + (self.norm == "l2" and s % 2 == 0), h, w)

    @staticmethod
    def _corner(u: torch.Tensor, size: int, s: int) -> torch.Tensor:
        return (u * (size - s)).long()

    @staticmethod
    def _window(top, left, s, h, w):
        rows = torch.arange(h, device=top.device)[None, :]
        cols = torch.arange(w, device=top.device)[None, :]
        r = (rows >= top[:, None]) & (rows < top[:, None] + s)
        c = (cols >= left[:, None]) & (cols < left[:, None] + s)
        return (r[:, :, None] & c[:, None, :])[:, None]

    def _scale(self, delta, x):
        return (x + delta * per_example(self.eps / lp_norm(delta, "l2").clamp_min(1e-12), x)).clamp(0, 1)

    def _init(self, x, streams):
        b, c, h, w = x.shape
        if self.norm == "linf":
            signs = torch.where(streams.draw(c * w)[:, 0] < 0.5, -1.0, 1.0).view(b, c, 1, w)
            return (x + self.eps * signs).clamp(0, 1)
        s = h // 5
        start, tiles = (h - 5 * s) // 2, [(i, j) for i in range(h // s) for j in range(w // s)]
        u = streams.draw(len(tiles) * (c + 1))[:, 0].view(b, len(tiles), c + 1)
        block = square_profile(s).to(x)
        delta = torch.zeros_like(x)
        for t, (i, j) in enumerate(tiles):
            top, left = start + i * s, start + j * s
            pattern = torch.where(per_example(u[:, t, c] < 0.5, x), block, block.T)
            signs = torch.where(u[:, t, :c] < 0.5, -1.0, 1.0).view(b, c, 1, 1)
            delta[:, :, top : top + s, left : left + s] += (pattern * signs)[:, :, : h - top, : w - left]
        return self._scale(delta, x)

    def _propose(self, x, x_best, it, u):
        b, c, h, w = x.shape
        s = self._side(it, h, w)
        signs = torch.where(u[:, -c:] < 0.5, -1.0, 1.0).view(b, c, 1, 1)
        top, left = self._corner(u[:, 0], h, s), self._corner(u[:, 1], w, s)
        window = self._window(top, left, s, h, w)
        if self.norm == "linf":
            return torch.where(window, (x + self.eps * signs).clamp(0, 1), x_best)
        delta = x_best - x
        other = self._window(self._corner(u[:, 2], h, s), self._corner(u[:, 3], w, s), s, h, w)
        batch = torch.arange(b, device=x.device)[:, None, None]
        rows = (top[:, None] + torch.arange(s, device=x.device))[:, :, None]
        cols = (left[:, None] + torch.arange(s, device=x.device))[:, None, :]
        old = delta[batch, :, rows, cols].permute(0, 3, 1, 2)
        block = square_profile(s).to(x)
        pattern = torch.where(per_example(u[:, 4] < 0.5, x), block, block.T) * signs
        new = pattern + old / (old.flatten(2).norm(dim=2)[..., None, None] + 1e-12)
        budget = (
            (self.eps**2 - lp_norm(delta, "l2") ** 2).clamp_min(0) / c + lp_norm(delta * (window | other), "l2") ** 2
        ).sqrt()
        new = new / (new.flatten(2).norm(dim=2)[..., None, None] + 1e-12) * per_example(budget, new)
        delta = torch.where(other, 0.0, delta)
        delta[batch, :, rows, cols] = new.permute(0, 2, 3, 1)
        return self._scale(delta, x)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        n, c = len(x), x.shape[1]
        adv_logits = self.predict_clean(model, x).clone()
        fooled = goal_met(adv_logits.argmax(1), y)
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        x_adv = x.clone()
        idx = (~fooled).nonzero().squeeze(1)
        if len(idx):
            streams = _Streams(None if seeds is None else seeds[idx], len(idx), x.device)
            xs, ys = x[idx], y[idx]
            best = self._init(xs, streams)
            with torch.no_grad():
                best_logits = model(best)
            loss, hit = margin(best_logits, ys, False), goal_met(best_logits.argmax(1), ys)
            queries[idx] += 1
            width = 2 + c if self.norm == "linf" else 5 + c
            for it in range(self.n_queries - 2):
                progress.step(it, self.n_queries - 2)
                if hit.any():
                    done = idx[hit]
                    x_adv[done], adv_logits[done], fooled[done] = best[hit], best_logits[hit], True
                    keep = ~hit
                    idx, xs, ys, best, loss, hit = idx[keep], xs[keep], ys[keep], best[keep], loss[keep], hit[keep]
                    best_logits = best_logits[keep]
                    streams.keep(keep)
                if len(idx) == 0:
                    break
                proposal = self._propose(xs, best, it, streams.next(width))
                # A proposal equal to the current point would return the known loss: not queried.
                moved = (proposal != best).flatten(1).any(1)
                hit = torch.zeros_like(moved)
                if moved.any():
                    with torch.no_grad():
                        logits = model(proposal[moved])
                    new_loss, hit[moved] = margin(logits, ys[moved], False), goal_met(logits.argmax(1), ys[moved])
                    better = torch.zeros_like(moved)
                    better[moved] = (new_loss < loss[moved]) | hit[moved]
                    best = torch.where(per_example(better, xs), proposal, best)
                    best_logits[better] = logits[better[moved]]
                    loss = loss.masked_scatter(better, new_loss[better[moved]])
                queries[idx] += moved
                iterations[idx] += 1
            x_adv[idx[hit]], adv_logits[idx[hit]], fooled[idx[hit]] = best[hit], best_logits[hit], True
        self.last_success, self.last_queries, self.last_iterations = fooled, queries, iterations
        self.keep_logits(torch.arange(n, device=x.device), adv_logits)
        return x_adv
