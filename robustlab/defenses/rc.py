"""RC: region-based classification (Cao & Gong 2017, "Mitigating evasion attacks to deep neural
networks via region-based classification"; DEEPSEC's RC)."""

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader

from robustlab.defenses.base import InferenceDefense
from robustlab.errors import RobustlabError
from robustlab.models.base import DefendedModel
from robustlab.utils import eval_mode

#: A radius search expected to take longer than this (seconds) says so, with the flags that make it cheaper.
NOTICE_S = 120


class RegionVote(DefendedModel):
    """The majority vote of ``net`` over ``n_samples`` points drawn uniformly from the hypercube of
    radius ``radius`` (a buffer) around each input, clipped to [0,1]; ties go to the lowest class.

    ``forward`` returns the Laplace-smoothed log vote shares ``log((votes + 1) / (n + C))``, whose
    argmax is the vote. The vote has no gradient, so when the input requires one the output also
    carries, straight through (value unchanged), the gradient of the smoothed classifier
    ``log mean_k softmax(net(x + u_k))`` over ``grad_samples`` fresh draws. Stochastic
    (``randomized``): attack it with EOT."""

    randomized = True

    def __init__(
        self, net: nn.Module, radius: float = 0.3, n_samples: int = 1000, grad_samples: int = 16, max_batch: int = 2048
    ):
        super().__init__()
        if n_samples < 1 or grad_samples < 0 or radius < 0:
            raise RobustlabError(
                f"RC needs n_samples >= 1, grad_samples >= 0 and radius >= 0, got {n_samples}, "
                f"{grad_samples} and {radius}",
                "use DEEPSEC's n_samples=1000 with a radius >= 0",
            )
        self.net, self.n_samples, self.grad_samples, self.max_batch = net, int(n_samples), int(grad_samples), max_batch
        self.register_buffer("radius", torch.tensor(float(radius)))

    def _noisy(self, x: torch.Tensor, k: int, radius, generator: torch.Generator | None) -> torch.Tensor:
        """``k`` hypercube samples per image, flattened to ``(B * k, ...)``."""
        device = x.device if generator is None else generator.device
        u = torch.rand((len(x), k, *x.shape[1:]), generator=generator, dtype=x.dtype, device=device).to(x.device)
        return (x.unsqueeze(1) + radius * (2 * u - 1)).clamp(0, 1).flatten(0, 1)

    def votes(
        self,
        x: torch.Tensor,
        radius: float | None = None,
        generator: torch.Generator | None = None,
        decide_early: bool = False,
    ) -> torch.Tensor:
        """Vote counts ``(B, C)`` at ``radius`` (default: the buffer). ``decide_early``: an image whose leading
        class is ahead by more than the samples still to come is no longer sent to the net, so its counts stop
        there but its vote (the argmax) is the full count's; its noise is still drawn, so every draw of the
        generator lands where it would without."""
        radius = self.radius if radius is None else radius
        chunk = max(1, self.max_batch // len(x))
        counts = None
        with torch.no_grad():
            for start in range(0, self.n_samples, chunk):
                k = min(chunk, self.n_samples - start)
                noisy, rows = self._noisy(x.detach(), k, radius, generator), None
                if decide_early and counts is not None and counts.shape[1] > 1:
                    top = counts.topk(2, 1).values
                    rows = (top[:, 0] - top[:, 1] <= self.n_samples - start).nonzero().squeeze(1)
                    if not len(rows):
                        continue
                    noisy = noisy.view(len(x), k, *x.shape[1:])[rows].flatten(0, 1)
                logits = self.net(noisy)
                votes = F.one_hot(logits.argmax(1), logits.shape[1]).view(-1, k, logits.shape[1]).sum(1)
                if counts is None:
                    counts = votes
                elif rows is None:
                    counts = counts + votes
                else:
                    counts[rows] += votes
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = self.votes(x)
        logits = torch.log((counts + 1.0) / (self.n_samples + counts.shape[1])).to(x.dtype)
        if self.grad_samples and torch.is_grad_enabled() and x.requires_grad:
            log_probs = F.log_softmax(self.net(self._noisy(x, self.grad_samples, self.radius, None)), 1)
            smoothed = log_probs.view(len(x), self.grad_samples, -1).logsumexp(1) - math.log(self.grad_samples)
            logits = logits + (smoothed - smoothed.detach())
        return logits


def vote_within(vote: RegionVote, loader: DataLoader, radius: float, seed: int, clean: float, tolerance: float) -> bool:
    """Whether the vote's accuracy at ``radius`` over ``loader`` is at most ``tolerance`` below ``clean``. The
    noise comes from ``seed``, so every radius sees the same draws (common random numbers make accuracy a smooth
    function of the radius). It stops as soon as the answer is certain, whatever the images left give, and
    stops voting on each image once its vote is decided (:meth:`RegionVote.votes` ``decide_early``): the answer
    is the one a full count gives."""
    device = vote.radius.device
    gen = torch.Generator(device).manual_seed(seed)
    total, correct, seen = len(loader.dataset), 0, 0
    for batch in loader:
        if clean - correct / total <= tolerance or clean - (correct + total - seen) / total > tolerance:
            break
        x, y = batch[0].to(device), batch[1].to(device)
        correct += int((vote.votes(x, radius, gen, decide_early=True).argmax(1) == y).sum())
        seen += len(y)
    return clean - correct / max(total, 1) <= tolerance


def search_radius(
    vote: RegionVote,
    loader: DataLoader,
    radius_min: float,
    radius_max: float,
    step: float,
    tolerance: float,
    seed: int = 0,
) -> float:
    """DEEPSEC's radius: on the grid ``radius_min + step, radius_min + 2 step, ..., radius_max``, the
    largest radius before the first whose vote accuracy falls more than ``tolerance`` below the
    clean accuracy of ``vote.net`` (``radius_min`` if the first does). Found by bisection, which
    gives DEEPSEC's linear scan's answer when accuracy falls with the radius, in log2 of the evaluations,
    each of which stops once its answer is decided (:func:`vote_within`)."""
    device = vote.radius.device
    correct = total = 0
    start = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            x, y = batch[0].to(device), batch[1].to(device)
            correct += int((vote.net(x).argmax(1) == y).sum())
            total += len(y)
    clean = correct / max(total, 1)
    grid = [radius_min + step * (i + 1) for i in range(int(round((radius_max - radius_min) / step)))]
    evaluations = math.ceil(math.log2(len(grid) + 1))
    expected = (time.perf_counter() - start) * vote.n_samples * evaluations
    if expected > NOTICE_S:
        rank_zero_info(
            f"RC radius search: at most {evaluations} votes of {vote.n_samples} samples on each of {total} validation "
            f"images, about {expected / 60:.0f} min at most (less where votes are decided early); defense.n_samples="
            f"{max(1, vote.n_samples // 10)}, a smaller data.val_size or defense.search=false make it cheaper"
        )
    lo, hi = -1, len(grid)  # grid[lo] passes (or radius_min), grid[hi] fails (or none left)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if vote_within(vote, loader, grid[mid], seed, clean, tolerance):
            lo = mid
        else:
            hi = mid
    return round(grid[lo], 10) if lo >= 0 else radius_min


class RC(InferenceDefense):
    """Train ``net`` as usual (plain cross-entropy), then classify by :class:`RegionVote`.

    After training, :meth:`after_fit` (called by ``train.py``) sets the radius: with ``search`` (the
    default) by :func:`search_radius` on the validation split, otherwise ``radius``. DEEPSEC: 1000
    samples; search over (0, 0.3] (MNIST) / (0, 0.1] (CIFAR-10) in steps of 0.01 with tolerance 0.01;
    fixed radius 0.3 / 0.02. During training ``val/acc`` is the plain network's (a vote per image costs
    ``n_samples`` forward passes); after calibration, forward and ``test/acc`` use the vote."""

    def __init__(
        self,
        net: nn.Module,
        radius: float = 0.3,
        n_samples: int = 1000,
        search: bool = True,
        radius_min: float = 0.0,
        radius_max: float = 0.3,
        radius_step: float = 0.01,
        tolerance: float = 0.01,
        grad_samples: int = 16,
        search_seed: int = 0,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        options = {"radius": float(radius), "n_samples": int(n_samples), "grad_samples": int(grad_samples)}
        super().__init__(net, RegionVote, options, optimizer, scheduler, scheduler_interval)
        if search and not (0 <= radius_min < radius_max and radius_step > 0):
            raise RobustlabError(
                f"RC radius search needs 0 <= radius_min < radius_max and radius_step > 0, got "
                f"{radius_min}, {radius_max}, {radius_step}",
                "use e.g. 0, 0.3 and 0.01 (DEEPSEC MNIST)",
            )
        self.search, self.search_seed = search, search_seed
        self.radius_min, self.radius_max, self.radius_step, self.tolerance = (
            radius_min,
            radius_max,
            radius_step,
            tolerance,
        )
        self.voting = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inference(x) if self.voting else self.model(x)

    def after_fit(self, datamodule) -> bool:
        """Set the vote's radius (searched on ``datamodule``'s validation split) and switch to voting."""
        if self.search:
            loader = DataLoader(datamodule.val_set, batch_size=datamodule.eval_batch_size)
            with eval_mode(self):
                radius = search_radius(
                    self.inference,
                    loader,
                    self.radius_min,
                    self.radius_max,
                    self.radius_step,
                    self.tolerance,
                    self.search_seed,
                )
            self.inference.radius.fill_(radius)
            self.inference_node["radius"] = radius
        self.voting = True
        return True
