"""SPSA: agreement with torchattacks' SPSA, stronger than random noise and close to white-box PGD, query
counting, seeding, input checks. The cheap ``mlp_model`` lets CI spend a realistic query budget; the CNN
check is marked slow."""

import pytest
import torch
import torchattacks

from robustlab import RobustlabError
from robustlab.attacks import PGD, SPSA
from tests.attacks.helpers import accuracy, check_query_counts, check_seeds_independent_of_batching


def sign_noise(x, eps, seed=0):
    """Random +-eps corners of the Linf ball, clipped to [0,1]: the weakest black-box attack."""
    gen = torch.Generator().manual_seed(seed)
    return (x + eps * (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1)).clamp(0, 1)


def test_spsa_beats_noise_and_nears_pgd(mlp_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    eps = 0.1
    attack = SPSA(eps=eps, steps=100, samples=32)
    x_adv = attack(mlp_model, x, y, seeds=torch.arange(len(x)))
    acc_spsa = accuracy(mlp_model, x_adv, y)
    acc_noise = accuracy(mlp_model, sign_noise(x, eps), y)
    acc_pgd = accuracy(mlp_model, PGD(eps=eps, step=0.01, steps=40)(mlp_model, x, y), y)
    print(
        f"MLP eps {eps}: robust accuracy noise {acc_noise:.3f}, SPSA {acc_spsa:.3f}, PGD-40 {acc_pgd:.3f}; "
        f"mean queries {attack.last_queries.float().mean():.0f}"
    )
    assert (x_adv - x).abs().max() <= eps * (1 + 1e-6) and 0 <= x_adv.min() and x_adv.max() <= 1
    assert acc_noise > 0.8 and acc_spsa < acc_noise - 0.5
    assert acc_spsa <= acc_pgd + 0.1


def test_spsa_agrees_with_torchattacks(mlp_model, mnist_test_batch):
    """Same loss (margin), Adam step, Rademacher estimate and budget, from the clean image (torchattacks has
    no random start); their draws come from the global RNG, ours per example, so only the rates compare."""
    x, y = mnist_test_batch
    ours = SPSA(eps=0.1, steps=30, samples=128, lr=0.01, delta=0.01, random_start=False)
    acc_ours = accuracy(mlp_model, ours(mlp_model, x, y, seeds=torch.arange(len(x))), y)
    torch.manual_seed(0)
    peer = torchattacks.SPSA(mlp_model, eps=0.1, delta=0.01, lr=0.01, nb_iter=30, nb_sample=128, max_batch_size=128)
    acc_peer = accuracy(mlp_model, peer(x, y), y)
    print(f"SPSA: robust accuracy ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9
    assert abs(acc_ours - acc_peer) <= 0.02


def test_spsa_counts_its_queries(mlp_model, mnist_test_batch, counting):
    x, y = mnist_test_batch[0][::10], mnist_test_batch[1][::10]
    model = counting(mlp_model)
    attack = SPSA(eps=0.05, steps=6, samples=8)
    attack(model, x, y, seeds=torch.arange(len(x)))
    check_query_counts(attack, model, 2 * attack.samples)
    assert (attack.last_iterations[~attack.last_success] == attack.steps + 1).all()


def test_spsa_seeding_does_not_depend_on_batching(mlp_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:12], mnist_test_batch[1][:12]
    check_seeds_independent_of_batching(SPSA(eps=0.1, steps=3, samples=4), mlp_model, x, y, torch.arange(40, 52), 5)


def test_targeted_spsa_reaches_its_targets(mlp_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::20], mnist_test_batch[1][::20]
    attack = SPSA(eps=0.3, steps=100, samples=16, targeted=True)
    x_adv = attack(mlp_model, x, y, seeds=torch.arange(len(x)))
    assert (attack.last_target != y).all()
    with torch.no_grad():
        assert torch.equal(attack.last_success, mlp_model(x_adv).argmax(1) == attack.last_target)
    assert attack.last_success.float().mean() >= 0.6


@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"delta": 0.0}, {"samples": 0}, {"steps": -1}, {"lr": float("nan")}])
def test_bad_spsa_parameters_are_refused(kwargs):
    with pytest.raises(RobustlabError) as err:
        SPSA(**kwargs)
    assert "fix:" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_spsa_nears_pgd_on_the_standard_cnn(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::5], mnist_test_batch[1][::5]
    eps = 0.2
    attack = SPSA(eps=eps, steps=100, samples=64)
    acc_spsa = accuracy(standard_model, attack(standard_model, x, y, seeds=torch.arange(len(x))), y)
    acc_noise = accuracy(standard_model, sign_noise(x, eps), y)
    acc_pgd = accuracy(standard_model, PGD(eps=eps, step=0.01, steps=40)(standard_model, x, y), y)
    print(f"CNN eps {eps}: robust accuracy noise {acc_noise:.3f}, SPSA {acc_spsa:.3f}, PGD-40 {acc_pgd:.3f}")
    # Gradient-free at this budget it trails white-box PGD by a few of the 40 images (0.250 vs 0.125).
    assert acc_spsa < acc_noise - 0.5 and acc_spsa <= acc_pgd + 0.15
