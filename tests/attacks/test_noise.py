"""Per-example seeded noise (``random_like``, ``draw``): each row is what ``torch.rand`` / ``torch.randn`` /
``torch.randint`` give with a generator seeded by that example's seed, whatever the batch, its order and the number
of threads that fill it."""

import pytest
import torch

from robustlab.attacks import base
from robustlab.attacks.base import draw, example_generators, random_like


def _reference(shape, seeds, kind):
    if kind == "rademacher":
        return [torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(s)).float() * 2 - 1 for s in seeds]
    sample = torch.rand if kind == "uniform" else torch.randn
    return [sample(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]


@pytest.mark.parametrize("threads", [False, True])
@pytest.mark.parametrize("shape", [(1,), (3, 5), (1, 28, 28), (3, 32, 32)])
def test_seeded_noise_is_each_seeds_own_stream(monkeypatch, shape, threads):
    monkeypatch.setattr(base, "PARALLEL_NOISE", 1 if threads else 1 << 40)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    seeds = [0, 7, 2**31 + 5, 12345, 3]
    x = torch.zeros(len(seeds), *shape)
    for kind in ("uniform", "normal"):
        assert torch.equal(random_like(x, torch.tensor(seeds), kind), torch.stack(_reference(shape, seeds, kind)))
    for kind in ("uniform", "normal", "rademacher"):
        drawn = draw(example_generators(torch.tensor(seeds), len(seeds)), (2, *shape), kind, x)
        assert torch.equal(drawn, torch.stack(_reference((2, *shape), seeds, kind)))
    reordered = random_like(x[:3], torch.tensor(seeds[::-1][:3]))
    assert torch.equal(reordered, torch.stack(_reference(shape, seeds[::-1][:3], "uniform")))


def test_large_batches_are_filled_by_several_threads(monkeypatch):
    """A batch above PARALLEL_NOISE elements is split between threads; each generator stays in one thread."""
    seen = []
    fill = base._fill
    monkeypatch.setattr(base, "_fill", lambda rows, sources, kind: (seen.append(len(rows)), fill(rows, sources, kind)))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    x = torch.zeros(8, 3, 64, 64)
    monkeypatch.setattr(base, "PARALLEL_NOISE", x.numel())
    noise = random_like(x, torch.arange(8))
    assert sorted(seen) == [4, 4]
    assert torch.equal(noise, torch.stack(_reference(x.shape[1:], list(range(8)), "uniform")))
