"""NATTACK: stronger than random noise and than a weaker setting of itself, query counting,
seeding, input checks. No installed peer has NATTACK (issue rule b)."""

import pytest
import torch

from robustlab import RobustlabError
from robustlab.attacks import PGD, NAttack
from tests.attacks.helpers import accuracy, check_query_counts, check_seeds_independent_of_batching
from tests.attacks.test_spsa import sign_noise


def test_nattack_beats_noise_and_a_smaller_population(mlp_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    eps, seeds = 0.1, torch.arange(len(x))
    strong = NAttack(eps=eps, steps=60, population=50)
    x_adv = strong(mlp_model, x, y, seeds=seeds)
    acc_strong = accuracy(mlp_model, x_adv, y)
    acc_weak = accuracy(mlp_model, NAttack(eps=eps, steps=60, population=8)(mlp_model, x, y, seeds=seeds), y)
    acc_noise = accuracy(mlp_model, sign_noise(x, eps), y)
    acc_pgd = accuracy(mlp_model, PGD(eps=eps, step=0.01, steps=40)(mlp_model, x, y), y)
    print(
        f"MLP eps {eps}: robust accuracy noise {acc_noise:.3f}, NATTACK pop 8 {acc_weak:.3f}, pop 50 "
        f"{acc_strong:.3f}, PGD-40 {acc_pgd:.3f}; mean queries {strong.last_queries.float().mean():.0f}"
    )
    assert (x_adv - x).abs().max() <= eps * (1 + 1e-6) and 0 <= x_adv.min() and x_adv.max() <= 1
    assert acc_noise > 0.8 and acc_strong < acc_noise - 0.3
    assert acc_strong < acc_weak - 0.1
    assert acc_strong >= acc_pgd - 0.02, "a black-box attack cannot beat white-box PGD by much"


def test_more_steps_only_add_successes(mlp_model, mnist_test_batch):
    """Per-example seeding and early stopping: the first 10 steps of a 30-step run are the 10-step run."""
    x, y = mnist_test_batch[0][::10], mnist_test_batch[1][::10]
    seeds = torch.arange(len(x))
    short, long = NAttack(eps=0.1, steps=10, population=20), NAttack(eps=0.1, steps=30, population=20)
    short(mlp_model, x, y, seeds=seeds)
    long(mlp_model, x, y, seeds=seeds)
    assert (long.last_success | ~short.last_success).all()
    assert long.last_success.sum() >= short.last_success.sum()
    done = short.last_success
    assert torch.equal(short.last_iterations[done], long.last_iterations[done])


def test_nattack_counts_its_queries(mlp_model, mnist_test_batch, counting):
    x, y = mnist_test_batch[0][::10], mnist_test_batch[1][::10]
    model = counting(mlp_model)
    attack = NAttack(eps=0.05, steps=5, population=10)
    attack(model, x, y, seeds=torch.arange(len(x)))
    check_query_counts(attack, model, attack.population)


def test_nattack_seeding_does_not_depend_on_batching(mlp_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:12], mnist_test_batch[1][:12]
    check_seeds_independent_of_batching(
        NAttack(eps=0.1, steps=3, population=6), mlp_model, x, y, torch.arange(7, 19), 7
    )


@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"sigma": 0.0}, {"population": 1}, {"steps": 1.5}])
def test_bad_nattack_parameters_are_refused(kwargs):
    with pytest.raises(RobustlabError) as err:
        NAttack(**kwargs)
    assert "fix:" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_nattack_on_the_standard_cnn(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::5], mnist_test_batch[1][::5]
    eps = 0.2
    acc = accuracy(
        standard_model, NAttack(eps=eps, steps=100, population=100)(standard_model, x, y, seeds=torch.arange(len(x))), y
    )
    acc_noise = accuracy(standard_model, sign_noise(x, eps), y)
    acc_pgd = accuracy(standard_model, PGD(eps=eps, step=0.01, steps=40)(standard_model, x, y), y)
    print(f"CNN eps {eps}: robust accuracy noise {acc_noise:.3f}, NATTACK {acc:.3f}, PGD-40 {acc_pgd:.3f}")
    assert acc < acc_noise - 0.4 and acc >= acc_pgd - 0.02
