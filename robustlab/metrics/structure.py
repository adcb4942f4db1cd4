"""Model-structure metrics of the comprehensive-evaluation paper (Sec. III-B.2): EBD, EBD-2,
eps-ENI, Neuron Sensitivity and Neuron Uncertainty. Every state is a sum (O(1), O(classes) or
O(layers)), so the results are the same on one process or many."""

import copy
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from robustlab import progress
from robustlab.attacks.base import Attack, check_count, check_eps, random_like
from robustlab.attacks.pgd import BIM, PGD
from robustlab.errors import RobustlabError
from robustlab.metrics.functional import ratio

MEASURES = ("l2", "rms")
NOISES = ("uniform", "gaussian", "sign")


def orthogonal_directions(x: torch.Tensor, count: int, seeds: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, count, d)``: per example, ``count`` random orthonormal directions of the input space (QR of a
    Gaussian ``d x count`` matrix), drawn from the example's seed when ``seeds`` are given."""
    d = x[0].numel()
    if count > d:
        raise RobustlabError(
            f"{count} orthogonal directions asked in a {d}-dimensional input", f"use at most {d} directions"
        )
    gauss = random_like(x.new_empty(len(x), d, count), seeds, "normal")
    return torch.linalg.qr(gauss.double()).Q.transpose(1, 2).to(x.dtype)


def boundary_distances(
    model: nn.Module,
    x: torch.Tensor,
    directions: torch.Tensor,
    step: float,
    max_distance: float,
    clip: bool = True,
    points: int = 2048,
    clean_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, D)``: per example and direction ``v`` (unit L2), the L2 length of the first displacement
    ``clip(x + t v) - x``, ``t = step, 2 step, ...``, at which the prediction differs from the one at ``x``
    (from ``clean_logits`` when given); ``inf`` if it never does up to ``t = max_distance``. The true boundary
    lies within ``step`` below. The still-open directions and several ``t`` go into forward passes of at most
    ``points`` images."""
    steps = int(math.floor(max_distance / step + 1e-9))
    with torch.no_grad():
        reference = (model(x) if clean_logits is None else clean_logits).argmax(1)
        flat = x.flatten(1)
        dist = torch.full(directions.shape[:2], float("inf"), device=x.device)
        open_ = torch.ones(directions.shape[:2], dtype=torch.bool, device=x.device)
        j = 1
        while j <= steps and open_.any():
            progress.step(j, steps)
            rows, cols = open_.nonzero(as_tuple=True)
            n = min(steps - j + 1, max(1, points // len(rows)))
            t = torch.arange(j, j + n, device=x.device, dtype=x.dtype) * step
            chunk = max(1, points // n)
            for start in range(0, len(rows), chunk):
                i, k = rows[start : start + chunk], cols[start : start + chunk]
                grid = flat[i, None] + t[None, :, None] * directions[i, k][:, None]
                if clip:
                    grid = grid.clamp(0, 1)
                changed = model(grid.view(-1, *x.shape[1:])).argmax(1).view(len(i), n) != reference[i, None]
                hit = changed.any(1)
                first = changed.int().argmax(1)[hit]
                i, k = i[hit], k[hit]
                dist[i, k] = (grid[hit, first] - flat[i]).norm(dim=1).to(dist.dtype)
                open_[i, k] = False
            j += n
    return dist


class EBD(Metric):
    """Empirical boundary distance, Eq. (20): ``EBD = mean_i d_i``, ``d_i = min_{v in V} phi_i(v)``.

    Per example, ``directions`` random orthonormal directions (seeded per example by ``seeds``), each
    searched both ways (``+v``, ``-v``), in steps of ``step`` up to ``max_distance`` (L2 units), for the
    first point whose prediction differs from the clean prediction (:func:`boundary_distances`; the image
    box is kept with ``clip``). ``measure``: ``"rms"`` (the paper's RMS distance, ``L2 / sqrt(d)``) or
    ``"l2"``. A direction that never changes the prediction counts as ``max_distance``; an example whose
    every direction does so contributes ``max_distance`` (a lower bound) and is counted in ``censored``.
    ``points`` bounds the images per forward pass of the search (memory).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        directions: int = 10,
        step: float = 0.1,
        max_distance: float = 20.0,
        measure: str = "rms",
        clip: bool = True,
        points: int = 2048,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.directions = check_count(directions, "directions")
        self.step, self.max_distance = check_eps(step, "step"), check_eps(max_distance, "max_distance")
        if self.step == 0 or self.max_distance < self.step:
            raise RobustlabError(
                f"EBD needs 0 < step <= max_distance, got {step} and {max_distance}",
                "set a positive step no larger than max_distance",
            )
        if measure not in MEASURES:
            raise RobustlabError(f"unknown EBD measure {measure!r}", f"use one of {', '.join(MEASURES)}")
        self.measure, self.clip, self.points = measure, bool(clip), check_count(points, "points")
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("censored", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        model: nn.Module,
        x: torch.Tensor,
        seeds: torch.Tensor | None = None,
        clean_logits: torch.Tensor | None = None,
    ) -> None:
        """``clean_logits`` (the model's logits on ``x``, if already computed) saves the clean forward pass."""
        v = orthogonal_directions(x, self.directions, seeds)
        dist = boundary_distances(
            model, x, torch.cat([v, -v], 1), self.step, self.max_distance, self.clip, self.points, clean_logits
        )
        d = dist.amin(1)
        self.censored += torch.isinf(d).sum()
        d = d.clamp(max=self.max_distance).double()
        if self.measure == "rms":
            d = d / math.sqrt(x[0].numel())
        self.total += d.sum()
        self.count += len(d)

    def compute(self) -> torch.Tensor:
        return ratio(self.total, self.count, "EBD")


def class_iterations(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    num_classes: int,
    seeds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, K)`` iterations of ``attack`` aimed at each class ``j != y`` until the prediction becomes ``j``
    (its ``last_iterations``), and ``(B, K)`` success flags; entries ``j == y`` are -1 / False."""
    iterations = torch.full((len(x), num_classes), -1, dtype=torch.long, device=x.device)
    success = torch.zeros(len(x), num_classes, dtype=torch.bool, device=x.device)
    for j in range(num_classes):
        rows = y != j
        if not rows.any():
            continue
        with progress.part(j, num_classes):
            attack(model, x[rows], y[rows], seeds=None if seeds is None else seeds[rows], target=j)
        if attack.last_iterations is None:
            raise RobustlabError(
                f"{type(attack).__name__} reports no iteration counts",
                "give EBD2 an iterative attack (BIM, PGD, MIFGSM)",
            )
        iterations[rows, j] = attack.last_iterations.long()
        success[rows, j] = attack.last_success
    return iterations, success


class EBD2(Metric):
    """Empirical boundary distance 2 (Sec. III-B.2): for each class direction ``j != y``, the number of
    iterations ``d_j`` an iterative attack aimed at ``j`` needs until the prediction changes to ``j``
    (:func:`class_iterations`). Default attack: BIM with ``eps`` 1 (unbounded), step 0.01, 100 steps,
    run targeted (an untargeted BIM/PGD given here is run targeted too); the paper uses step 0.0005.

    ``compute()`` gives ``EBD2`` (mean of ``d_j`` over examples and classes), ``nearest`` (mean over
    examples of ``min_j d_j``), ``per_class`` (``(K,)``, mean ``d_j`` per target class) and
    ``failure_rate``. A failed attack counts as its ``last_iterations`` (``steps + 1`` for BIM/PGD), a
    lower bound, and is counted in ``failures``.

    ``rule``: ``"target"`` (default) counts the iterations until the prediction becomes ``j``; ``"leave"``, the
    paper's wording, until it leaves ``y`` (the attack still descends towards ``j``; needs a PGD-family attack).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int, attack: Attack | None = None, rule: str = "target", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_count(num_classes, "num_classes", 2)
        attack = attack if attack is not None else BIM(eps=1.0, step=0.01, steps=100)
        if rule not in ("target", "leave"):
            raise RobustlabError(
                f"unknown EBD2 rule {rule!r}", "use rule=target (reach class j) or rule=leave (leave y)"
            )
        if rule == "leave" and not isinstance(attack, PGD):
            raise RobustlabError(
                f"EBD2 rule=leave needs a PGD-family attack, got {type(attack).__name__}",
                "give ebd2.attack a BIM, PGD or MIFGSM, or use rule=target",
            )
        if not attack.targeted or rule == "leave":
            attack = copy.copy(attack)
            attack.targeted = True
            attack.goal = "misclassified" if rule == "leave" else "target"
        self.attack, self.rule = attack, rule
        k = self.num_classes
        self.add_state("total", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("failures", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("nearest_total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor | None = None) -> None:
        iterations, success = class_iterations(model, x, y, self.attack, self.num_classes, seeds)
        valid = iterations >= 0
        d = iterations.double()
        self.total += torch.where(valid, d, 0.0).sum(0)
        self.count += valid.sum(0)
        self.failures += (valid & ~success).sum()
        self.nearest_total += torch.where(valid, d, float("inf")).amin(1).sum()
        self.n_samples += len(x)

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "EBD2": ratio(self.total.sum(), self.count.sum(), "EBD2"),
            "nearest": ratio(self.nearest_total, self.n_samples, "EBD2 nearest"),
            "per_class": torch.stack(
                [ratio(t, c, f"EBD2 class {j}") for j, (t, c) in enumerate(zip(self.total, self.count))]
            ),
            "failure_rate": ratio(self.failures, self.count.sum(), "EBD2 failure rate"),
        }


def noise_insensitivity(loss_clean: torch.Tensor, loss_noisy: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """The terms of eps-empirical noise insensitivity, Eq. (21): ``|l(x|y) - l(mu|y)| / ||x - mu||_inf``."""
    return (loss_clean - loss_noisy).abs() / distance


class ENI(Metric):
    """eps-empirical noise insensitivity ``I_f(eps)``, Eq. (21) (lower is more robust): the mean over
    clean examples ``x`` and their ``samples`` polluted copies ``mu`` with ``||x - mu||_inf <= eps`` of
    ``|CE(x, y) - CE(mu, y)| / ||x - mu||_inf``.

    ``noise``: ``"uniform"`` (``U(-eps, eps)`` per pixel), ``"gaussian"`` (``N(0, (eps/2)^2)`` clipped to
    the eps-ball) or ``"sign"`` (``+-eps``), seeded per example by ``seeds``, then clipped to [0,1].
    ``update(..., noisy=mu)`` uses given copies instead (e.g. adversarial examples), one per example;
    copies outside the eps-ball or equal to ``x`` are skipped (``skipped`` counts them). ``clean_logits``
    (the model's logits on ``x``, if already computed) saves the clean forward pass.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, eps: float = 0.1, samples: int = 10, noise: str = "uniform", **kwargs):
        super().__init__(**kwargs)
        self.eps, self.samples = check_eps(eps), check_count(samples, "samples")
        if noise not in NOISES:
            raise RobustlabError(f"unknown ENI noise {noise!r}", f"use one of {', '.join(NOISES)}")
        self.noise = noise
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _pollute(self, x: torch.Tensor, seeds: torch.Tensor | None) -> torch.Tensor:
        rep = x.repeat_interleave(self.samples, 0)
        rep_seeds = (
            None
            if seeds is None
            else (seeds.long()[:, None] * self.samples + torch.arange(self.samples, device=seeds.device)).flatten()
        )
        if self.noise == "gaussian":
            delta = (random_like(rep, rep_seeds, "normal") * self.eps / 2).clamp(-self.eps, self.eps)
        else:
            u = 2 * random_like(rep, rep_seeds) - 1
            delta = self.eps * (u if self.noise == "uniform" else u.sign())
        return (rep + delta).clamp(0, 1)

    def update(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        seeds: torch.Tensor | None = None,
        noisy: torch.Tensor | None = None,
        clean_logits: torch.Tensor | None = None,
    ) -> None:
        copies = 1 if noisy is not None else self.samples
        mu = noisy if noisy is not None else self._pollute(x, seeds)
        x_rep, y_rep = x.repeat_interleave(copies, 0), y.repeat_interleave(copies, 0)
        with torch.no_grad():
            logits = model(x) if clean_logits is None else clean_logits
            clean = F.cross_entropy(logits, y, reduction="none").repeat_interleave(copies, 0)
            polluted = F.cross_entropy(model(mu), y_rep, reduction="none")
        distance = (x_rep - mu).flatten(1).abs().amax(1)
        keep = (distance > 0) & (distance <= self.eps * (1 + 1e-6))
        self.total += noise_insensitivity(clean, polluted, distance)[keep].double().sum()
        self.count += keep.sum()
        self.skipped += (~keep).sum()

    def compute(self) -> torch.Tensor:
        return ratio(self.total, self.count, "ENI")


def _check_layers(outputs: Mapping[str, torch.Tensor], layers: list[str]) -> None:
    if list(outputs) != layers:
        raise RobustlabError(
            f"got outputs of layers {list(outputs)} but the metric measures {layers}",
            "pass layer_outputs(model, x, layers) for the same layers, in the same order",
        )


class _PerLayerMean(Metric):
    """A per-layer sum of per-example values over ``layers`` and the example count (sum states);
    ``compute()`` gives ``{layer: sum / count}``."""

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, layers: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.layers = list(layers)
        if not self.layers:
            raise RobustlabError(f"{type(self).__name__} got no layers", "pass the layer names to measure")
        self.add_state("total", torch.zeros(len(self.layers), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, sums: list[torch.Tensor], n: int) -> None:
        self.total += torch.stack(sums)
        self.count += n

    def compute(self) -> dict[str, torch.Tensor]:
        name = type(self).__name__
        return {n: ratio(self.total[i], self.count, f"{name} {n}") for i, n in enumerate(self.layers)}


class NeuronSensitivity(_PerLayerMean):
    """Neuron sensitivity, Eq. (22): for neuron ``m`` of layer ``l``, ``sigma = (1/n) sum_i
    ||f_lm(x_i) - f_lm(x'_i)||_1 / dim(f_lm(x_i))`` over clean/adversarial pairs (a conv neuron's output is
    its feature map). ``compute()`` gives ``{layer: mean_m sigma}``, the per-layer mean the paper plots.

    ``update(clean, adversarial)`` takes the raw :func:`~robustlab.metrics.coverage.layer_outputs` of both."""

    def update(self, clean: Mapping[str, torch.Tensor], adversarial: Mapping[str, torch.Tensor]) -> None:
        _check_layers(clean, self.layers)
        _check_layers(adversarial, self.layers)
        self._add(
            [(clean[n] - adversarial[n]).flatten(1).abs().mean(1).double().sum() for n in self.layers],
            len(next(iter(clean.values()))),
        )


class NeuronUncertainty(_PerLayerMean):
    """Neuron uncertainty, Eq. (23): ``U(f_lm) = (1/n) sum_i variance(f_lm(x_i))``, the (population)
    variance of a conv neuron's feature map; a layer of scalar neurons (e.g. Linear) has no per-neuron
    spread, so its units' variance within the layer is used. ``compute()`` gives ``{layer: mean_m U}``.

    ``update(outputs)`` takes the raw :func:`~robustlab.metrics.coverage.layer_outputs`."""

    @staticmethod
    def _variance(out: torch.Tensor) -> torch.Tensor:
        """Per example: the mean over channels of each feature map's population variance (a 2-D output: the
        variance over its units), as the squared norm of the centred values (much faster than ``var`` on CPU)."""
        flat = out.flatten(2) if out.dim() > 2 else out.reshape(len(out), 1, -1)
        centred = flat - flat.mean(2, keepdim=True)
        return (torch.linalg.vector_norm(centred, dim=2).double() ** 2 / flat.shape[2]).mean(1)

    def update(self, outputs: Mapping[str, torch.Tensor]) -> None:
        _check_layers(outputs, self.layers)
        self._add([self._variance(outputs[n]).sum() for n in self.layers], len(next(iter(outputs.values()))))
