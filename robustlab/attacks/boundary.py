"""Boundary Attack (Brendel et al. 2018): a decision-based L2 attack needing only the predicted label."""

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import Attack, check_count, check_eps, lp_norm, query
from robustlab.errors import RobustlabError
from robustlab.rng import Streams
from robustlab.success import goal_met


def _positive(value: float, name: str) -> float:
    if check_eps(value, name) == 0:
        raise RobustlabError(f"{name} must be > 0", f"set a positive {name}")
    return float(value)


class BoundaryAttack(Attack):
    """Boundary Attack (Brendel et al. 2018, "Decision-Based Adversarial Attacks"), untargeted L2,
    using only the model's top-1 decision.

    * Start: uniform noise drawn up to ``init_draws`` times until it is misclassified, then a
      binary search (``init_steps`` halvings) for the smallest blend ``(1-a) x + a noise`` that is.
      An example with no adversarial start fails and comes back clean; an example the model
      already misclassifies is its own adversarial example.
    * Each step: an orthogonal step on the sphere around ``x`` (Gaussian direction orthogonal to
      ``x - x_adv``, length ``spherical_step * ||x - x_adv||``) then a step of
      ``source_step * ||x - x_adv||`` towards ``x``; the candidate replaces ``x_adv`` if it is
      adversarial and closer (one query). Every ``stats_every`` steps the spherical candidate is
      queried too and the step sizes adapt by ``step_adaptation`` as in the Foolbox 3 reference:
      both steps grow (shrink) when more than 50% (fewer than 20%) of the last 100 spherical
      candidates were adversarial, the source step when more than 25% (fewer than 10%) of the
      last 30 candidates were. An example stops when its source step falls below ``convergence``.
    * Unlike Foolbox 3, every example draws its own directions, seeded per example by ``seeds``.

    ``eps`` (optional): success also requires ``||x_adv - x||_2 <= eps``, for an accuracy at a
    fixed L2 budget; an example stops as soon as it is within ``eps``. ``last_queries`` counts model queries per
    example (at most :attr:`max_queries`); ``last_iterations`` the steps each example ran.
    """

    name = "boundary"
    kind = "blackbox"
    clean_on_failure = True

    def __init__(
        self,
        steps: int = 25000,
        spherical_step: float = 0.01,
        source_step: float = 0.01,
        step_adaptation: float = 1.5,
        convergence: float = 1e-7,
        stats_every: int = 10,
        init_draws: int = 1000,
        init_steps: int = 10,
        eps: float | None = None,
    ):
        super().__init__()
        self.steps, self.stats_every = check_count(steps, "steps", 0), check_count(stats_every, "stats_every")
        self.spherical_step = _positive(spherical_step, "spherical_step")
        self.source_step = _positive(source_step, "source_step")
        self.step_adaptation, self.convergence = (
            _positive(step_adaptation, "step_adaptation"),
            check_eps(convergence, "convergence"),
        )
        self.init_draws, self.init_steps = (
            check_count(init_draws, "init_draws"),
            check_count(init_steps, "init_steps", 0),
        )
        self.eps = None if eps is None else check_eps(eps)

    @property
    def max_queries(self) -> int:
        """The most model queries one example can cost."""
        return 1 + self.init_draws + self.init_steps + self.steps + self.steps // self.stats_every

    def _start(self, model, x, y, streams, queries):
        """Per example: an adversarial start (or ``x``), its logits, whether one was found, and whether ``x`` itself
        is one."""
        logits = self.predict_clean(model, x).clone()
        clean_adv = goal_met(logits.argmax(1), y)
        queries += 1
        found, noise = clean_adv.clone(), x.clone()
        for _ in range(self.init_draws):
            idx = (~found).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            draws = streams.draw("uniform", x.shape[1:], x, idx)
            out = query(model, draws)
            hit = goal_met(out.argmax(1), y[idx])
            queries[idx] += 1
            noise[idx[hit]], found[idx[hit]], logits[idx[hit]] = draws[hit], True, out[hit]
        idx = (found & ~clean_adv).nonzero().squeeze(1)
        lo, hi = torch.zeros(len(idx), device=x.device), torch.ones(len(idx), device=x.device)
        xs, ns = x[idx].flatten(1), noise[idx].flatten(1)
        for _ in range(self.init_steps if len(idx) else 0):
            mid = (lo + hi) / 2
            out = query(model, ((1 - mid[:, None]) * xs + mid[:, None] * ns).view_as(x[idx]))
            hit = goal_met(out.argmax(1), y[idx])
            queries[idx] += 1
            lo, hi = torch.where(hit, lo, mid), torch.where(hit, mid, hi)
            logits[idx[hit]] = out[hit]
        start = x.clone()
        start[idx] = ((1 - hi[:, None]) * xs + hi[:, None] * ns).view_as(x[idx])
        return start, logits, found, clean_adv

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, device = len(x), x.device
        streams = Streams(seeds, n, device)
        queries = torch.zeros(n, dtype=torch.long, device=device)
        adv, logits, found, clean_adv = self._start(model, x, y, streams, queries)
        spherical = torch.full((n,), self.spherical_step, device=device)
        source = torch.full((n,), self.source_step, device=device)
        spherical_stats = torch.full((100, n), float("nan"), device=device)
        step_stats = torch.full((30, n), float("nan"), device=device)
        iterations = torch.zeros(n, dtype=torch.long, device=device)
        flat_x, flat_adv = x.flatten(1), adv.flatten(1)
        for k in range(1, self.steps + 1):
            progress.step(k, self.steps)
            running = found & ~clean_adv & (source >= self.convergence)
            if self.eps is not None:
                running &= (flat_adv - flat_x).norm(dim=1) > self.eps
            idx = running.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            originals = flat_x[idx]
            diff = originals - flat_adv[idx]
            dist = diff.norm(dim=1)
            eta = streams.draw("normal", diff.shape[1:], x, idx)
            eta = eta - (eta * diff).sum(1, keepdim=True) * diff / dist[:, None] ** 2
            eta = eta * (spherical[idx] * dist / eta.norm(dim=1).clamp_min(1e-12))[:, None]
            on_sphere = (originals + (eta - diff) / (spherical[idx] ** 2 + 1).sqrt()[:, None]).clamp(0, 1)
            towards = originals - on_sphere
            towards_norm = towards.norm(dim=1).clamp_min(1e-12)
            length = (source[idx] * dist + towards_norm - dist).clamp_min(0) / towards_norm
            candidates = (on_sphere + length[:, None] * towards).clamp(0, 1)
            check = k % self.stats_every == 0
            batch = torch.cat([candidates, on_sphere]) if check else candidates
            out = query(model, batch.view(-1, *x.shape[1:]))
            hits = goal_met(out.argmax(1), y[idx].repeat(1 + check))
            queries[idx] += 1 + check
            iterations[idx] += 1
            is_adv = hits[: len(idx)]
            accept = is_adv & ((originals - candidates).norm(dim=1) < dist)
            flat_adv[idx[accept]], logits[idx[accept]] = candidates[accept], out[: len(idx)][accept]
            if check:
                self._adapt(idx, hits[len(idx) :], is_adv, spherical, source, spherical_stats, step_stats, k)
        adv = flat_adv.view_as(x)
        success = found
        if self.eps is not None:
            success = success & (lp_norm(adv - x, "l2") <= self.eps)
        self.last_success, self.last_iterations, self.last_queries = success, iterations, queries
        self.keep_logits(torch.arange(n, device=device), logits)
        return adv

    def _adapt(self, idx, spherical_adv, is_adv, spherical, source, spherical_stats, step_stats, step):
        """Foolbox 3's step-size adaptation from the success rates of the last 100 spherical and
        the last 30 full candidates (tracked every ``stats_every`` steps)."""
        k = step // self.stats_every - 1
        spherical_stats[k % len(spherical_stats), idx] = spherical_adv.float()
        step_stats[k % len(step_stats), idx] = is_adv.float()
        factor = self.step_adaptation
        stats = spherical_stats[:, idx]
        full, rate = ~stats.isnan().any(0), stats.nanmean(0)
        up, down = full & (rate > 0.5), full & (rate < 0.2)
        scale = torch.where(up, factor, torch.where(down, 1 / factor, 1.0))
        spherical[idx] *= scale
        source[idx] *= scale
        spherical_stats[:, idx[up | down]] = float("nan")
        stats = step_stats[:, idx]
        full, rate = ~stats.isnan().any(0), stats.nanmean(0)
        up, down = full & (rate > 0.25), full & (rate < 0.1)
        source[idx] *= torch.where(up, factor, torch.where(down, 1 / factor, 1.0))
        step_stats[:, idx[up | down]] = float("nan")
