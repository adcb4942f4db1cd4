"""RC: the prediction is the majority vote of a model whose votes we script; the radius search
returns DEEPSEC's radius; the defense trains, searches, reloads as the vote and evaluates."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab.defenses.rc import RegionVote, search_radius
from robustlab.models.base import preprocessors, randomized
from tests.defenses.helpers import train_reload_evaluate


class Scripted(nn.Module):
    """Predicts, for the k-th hypercube sample of image b, the class ``labels[b, k]``."""

    def __init__(self, labels: torch.Tensor, classes: int = 4):
        super().__init__()
        self.labels, self.classes = labels, classes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert len(z) == self.labels.numel(), "all samples in one chunk"
        return 5.0 * F.one_hot(self.labels.flatten(), self.classes).float()


def test_prediction_is_the_majority_vote():
    labels = torch.tensor(
        [
            [2, 2, 1, 2, 0, 1, 2],  # 2 wins 4-2-1
            [1, 0, 0, 1, 3, 1, 0],  # 0 and 1 tie 3-3: the lower class
            [3, 3, 3, 0, 0, 0, 0],
        ]
    )  # 0 wins 4-3, although 3 came first
    vote = RegionVote(Scripted(labels), radius=0.1, n_samples=7, grad_samples=0)
    counts = torch.stack([torch.bincount(row, minlength=4) for row in labels]).float()
    with torch.no_grad():
        out = vote(torch.rand(3, 1, 4, 4))
    assert torch.equal(out.argmax(1), torch.tensor([2, 0, 0]))
    assert torch.allclose(out, torch.log((counts + 1) / (7 + 4)))


def test_vote_samples_the_hypercube_and_passes_the_smoothed_gradient():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 3)

        def forward(self, z):
            seen.append(z.detach())
            return self.lin(z.flatten(1))

    vote = RegionVote(Spy(), radius=0.2, n_samples=500, grad_samples=8)
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    torch.manual_seed(0)
    out = vote(x)
    samples = seen[0].view(2, 500, 1, 4, 4)
    delta = samples - x.detach().unsqueeze(1)
    inside = (samples == 0) | (samples == 1) | (delta.abs() <= 0.2 + 1e-6)
    assert inside.all() and delta.abs().max() > 0.19, "uniform in the clipped radius-0.2 cube"
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(out, vote(x)), "the gradient path leaves the value (the vote) unchanged"
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, "the smoothed classifier's gradient"
    assert randomized(vote) and preprocessors(vote) == []


def test_radius_search_returns_the_last_radius_within_tolerance():
    class Threshold(nn.Module):  # class 0 while every pixel stays within 0.2 of 0.5, else class 1
        def forward(self, z):
            far = ((z - 0.5).abs().flatten(1).amax(1) > 0.2).float()
            return torch.stack([1 - far, far], 1)

    x = torch.full((20, 1, 8, 8), 0.5)
    loader = DataLoader(TensorDataset(x, torch.zeros(20, dtype=torch.long)), batch_size=8)
    vote = RegionVote(Threshold(), radius=0.0, n_samples=20)
    assert search_radius(vote, loader, 0.0, 0.3, 0.01, 0.01) == pytest.approx(0.2)
    assert search_radius(vote, loader, 0.0, 0.15, 0.01, 0.01) == pytest.approx(0.15), "none fails: radius_max"
    assert search_radius(vote, loader, 0.25, 0.3, 0.01, 0.01) == 0.25, "the first fails: radius_min"


def test_rc_trains_searches_reloads_as_the_vote_and_evaluates(tmp_path, mnist_test_batch):
    _, model = train_reload_evaluate(tmp_path, "rc", ["defense.n_samples=16"], *mnist_test_batch)
    assert isinstance(model, RegionVote) and model.n_samples == 16
    radius = model.radius.item()
    assert 0 <= radius <= 0.3 + 1e-6 and math.isclose(radius * 100, round(radius * 100), abs_tol=1e-4), (
        "on the 0.01 grid"
    )


class _Mean(nn.Module):
    """Class 1 when an image's mean pixel exceeds 0.4 (two more classes it never picks); counts the images it is
    sent."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, z):
        self.seen += len(z)
        m = z.flatten(1).mean(1, keepdim=True) - 0.4
        return torch.cat([-m, m, torch.full_like(m, -1.0), torch.full_like(m, -2.0)], 1) * 40


def _falling(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-0 images, 15 of 25 pixels black and 10 at 0.78 to 0.999: clipping the noise at 0 lifts their mean
    towards 0.4, so the vote's accuracy falls from 0.94 at radius 0.05 to 0.42 at 0.6."""
    x = torch.zeros(n, 1, 5, 5)
    x.view(n, -1)[:, :10] = torch.linspace(0.78, 0.999, n).view(-1, 1)
    return x, torch.zeros(n, dtype=torch.long)


def test_an_early_decided_vote_is_the_full_vote_and_draws_the_same_noise():
    x, _ = _falling()
    net = _Mean()
    vote = RegionVote(net, n_samples=200, grad_samples=0, max_batch=480)
    sent = {"full": 0, "early": 0}
    for radius in (0.05, 0.3, 0.6):
        g_full, g_early = (torch.Generator().manual_seed(3) for _ in range(2))
        net.seen = 0
        full = vote.votes(x, radius, g_full)
        sent["full"], net.seen = sent["full"] + net.seen, 0
        early = vote.votes(x, radius, g_early, decide_early=True)
        sent["early"] += net.seen
        assert torch.equal(early.argmax(1), full.argmax(1)), radius
        assert torch.equal(g_full.get_state(), g_early.get_state()), "the same draws, whatever was decided"
    assert sent["full"] == 3 * len(x) * 200 and sent["early"] < 0.75 * sent["full"], sent


@pytest.mark.parametrize("tolerance, radius", [(0.0, 0.0), (0.1, 0.05), (0.3, 0.3), (0.6, 0.6)])
def test_the_radius_search_stops_early_with_the_full_counts_answer(tolerance, radius):
    """Against DEEPSEC's linear scan over the grid with every vote counted in full."""
    x, y = _falling()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    net = _Mean()
    vote = RegionVote(net, n_samples=100, grad_samples=0, max_batch=80)
    grid = [0.05 * (i + 1) for i in range(12)]

    def accuracy(r):
        gen = torch.Generator().manual_seed(0)
        return sum(int((vote.votes(xb, r, gen).argmax(1) == yb).sum()) for xb, yb in loader) / len(x)

    failed = next((i for i, r in enumerate(grid) if 1.0 - accuracy(r) > tolerance), len(grid))
    assert radius == (grid[failed - 1] if failed else 0.0) or math.isclose(radius, grid[failed - 1])
    net.seen = 0
    assert search_radius(vote, loader, 0.0, 0.6, 0.05, tolerance) == pytest.approx(radius)
    evaluations = math.ceil(math.log2(len(grid) + 1))
    assert net.seen < 0.8 * evaluations * len(x) * 100, "fewer images sent than the full counts' bisection"
