"""Counter-based per-example streams (``robustlab.rng``): SplitMix64's published outputs, each example's draws
independent of its batch, order, subset and of earlier draws' sizes, and the draws' distributions."""

import math

import pytest
import torch
from scipy import stats

from robustlab.attacks import PGD
from robustlab.attacks.base import choose_targets, random_like
from robustlab.rng import Streams, bits, keys

M64 = (1 << 64) - 1


def _splitmix64(state: int, n: int) -> list[int]:
    """Vigna's reference splitmix64.c, in Python integers."""
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out.append(z ^ (z >> 31))
    return out


def test_bits_are_splitmix64():
    """The published first outputs of SplitMix64 seeded with 1234567, and the Python reference for other states and
    positions (negative int64 keys are the states at and above 2**63)."""
    first = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821]
    assert [v & M64 for v in bits(torch.tensor([1234567]), torch.zeros(1, dtype=torch.long), 5)[0].tolist()] == first
    key = torch.tensor([0, 1, -1, 2**62 + 12345, -(2**63)])
    start = torch.tensor([0, 3, 1000, 7, 2**40])
    got = bits(key, start, 6)
    for k, s, row in zip(key.tolist(), start.tolist(), got.tolist()):
        state = (k + s * 0x9E3779B97F4A7C15) & M64
        assert [v & M64 for v in row] == _splitmix64(state, 6)
    assert [v & M64 for v in keys(torch.tensor([5, 6]))] == [_mix(5), _mix(6)]


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


@pytest.mark.parametrize("kind", ["uniform", "normal", "rademacher"])
def test_each_example_draws_its_own_stream_whatever_the_batch(kind):
    seeds = torch.tensor([0, 7, 2**31 + 5, 12345, 3, -9, 2**62])
    full = Streams(seeds)
    first, second = full.draw(kind, (3, 5), torch.zeros(1)), full.draw(kind, (2,), torch.zeros(1))
    order = torch.tensor([4, 0, 6, 2])
    part = Streams(seeds[order])
    assert torch.equal(part.draw(kind, (3, 5), torch.zeros(1)), first[order])
    assert torch.equal(part.draw(kind, (2,), torch.zeros(1)), second[order])
    rows = Streams(seeds)
    assert torch.equal(rows.draw(kind, (3, 5), torch.zeros(1), rows=order), first[order])
    assert torch.equal(rows.draw(kind, (3, 5), torch.zeros(1)), _again(seeds, kind, order))
    kept = Streams(seeds)
    kept.draw(kind, (3, 5), torch.zeros(1))
    assert torch.equal(kept.keep(order).draw(kind, (2,), torch.zeros(1)), second[order])
    assert len(kept) == 4


def _again(seeds, kind, order):
    """The rows' next (3, 5) draw: the drawn rows' second one, the others' first."""
    ref = Streams(seeds)
    first, then = ref.draw(kind, (3, 5), torch.zeros(1)), ref.draw(kind, (3, 5), torch.zeros(1))
    mask = torch.zeros(len(seeds), dtype=torch.bool)
    mask[order] = True
    return torch.where(mask[:, None, None], then, first)


def test_draws_of_even_sizes_continue_one_stream():
    streams, whole = Streams(torch.arange(4)), Streams(torch.arange(4)).uniform(10)
    assert torch.equal(torch.cat([streams.uniform(4), streams.uniform(6)], 1), whole)


def test_salts_and_seeds_give_other_streams():
    x = torch.zeros(64, 100)
    base = Streams(torch.arange(64)).uniform(2000)
    salted = Streams(torch.arange(64), salt=1).uniform(2000)
    assert torch.equal(Streams(torch.arange(64), salt=0).uniform(2000), base)
    for other in (salted, base.roll(1, 0)):
        assert abs(stats.pearsonr(other.flatten(), base.flatten()).statistic) < 0.01
    assert (torch.corrcoef(base) - torch.eye(64)).abs().max() < 0.12  # 64 adjacent seeds: about 0.022 per pair
    assert not torch.equal(random_like(x, torch.arange(64)), random_like(x, torch.arange(1, 65)))


def test_distributions():
    """Kolmogorov-Smirnov against U[0,1) and N(0,1), and the moments of the signs, the integers and Laplace."""
    seeds = torch.arange(200) * 7919 - 50
    u, z = Streams(seeds).uniform(501), Streams(seeds).normal(501)
    assert 0 <= u.min() and u.max() < 1 and u.dtype == torch.float32
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    assert abs(stats.kurtosis(z.flatten().numpy())) < 0.05
    signs = Streams(seeds).rademacher(1000)
    assert set(signs.unique().tolist()) == {-1.0, 1.0} and abs(signs.mean()) < 0.01
    counts = torch.bincount(Streams(seeds).randint(9, 900).flatten(), minlength=9).double()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    lap = random_like(torch.zeros(200, 1000), seeds, "laplace")
    assert abs(lap.abs().mean() - 1) < 0.01 and abs(lap.var() - 2) < 0.05


def test_targets_are_uniform_wrong_classes_per_seed():
    y = torch.arange(4000) % 10
    logits = torch.zeros(4000, 10)
    target = choose_targets(logits, y, "random", torch.arange(4000))
    assert (target != y).all()
    assert stats.chisquare(torch.bincount((target - y) % 10, minlength=10)[1:].numpy()).pvalue > 1e-3
    assert torch.equal(choose_targets(logits[7:20], y[7:20], "random", torch.arange(7, 20)), target[7:20])


def test_seeded_random_starts_are_as_strong_as_torchs_generator(standard_model, mnist_test_batch):
    """PGD-5's robust accuracy from seeded random starts is, over several seeds, that of starts drawn from torch's
    generator (within three standard errors): the streams change which start an example gets, not how good it is."""
    x, y = mnist_test_batch
    attack = PGD(eps=0.3, step=0.01, steps=5)
    rates = {
        seeded: [
            1
            - attack.run(standard_model, x, y, seeds=torch.arange(len(x)) + 100_003 * k if seeded else None)
            .success.float()
            .mean()
            .item()
            for k in range(6)
        ]
        for seeded in (True, False)
    }
    means = {k: sum(v) / len(v) for k, v in rates.items()}
    spread = math.sqrt(sum(torch.tensor(v).var().item() / len(v) for v in rates.values()))
    assert abs(means[True] - means[False]) <= 3 * max(spread, 1 / len(x)), (rates, spread)


def test_without_seeds_the_global_generator_is_used():
    torch.manual_seed(3)
    a = Streams(None, 5).normal(4)
    torch.manual_seed(3)
    assert torch.equal(a, torch.randn(5, 4))
    assert len(Streams(None, 5).keep(torch.tensor([True, False, True, False, True]))) == 3


def test_a_batch_costs_a_few_integer_passes():
    """No Python loop over examples: 4096 examples take about as long as a handful (a generous bound)."""
    import time

    def seconds(n):
        s = Streams(torch.arange(n))
        t = time.perf_counter()
        s.uniform(2)
        return time.perf_counter() - t

    seconds(8)
    assert seconds(4096) < max(20 * seconds(8), 0.01)
    assert math.isclose(Streams(torch.arange(3)).uniform(0).numel(), 0)
