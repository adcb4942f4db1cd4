"""PGD: cross-check against torchattacks, the threat-model constraints, seeding and input checks."""

import pytest
import torch
import torchattacks

from robustlab import RobustlabError
from robustlab.attacks import PGD
from tests.attacks.helpers import accuracy, check_seeds_independent_of_batching


@pytest.mark.parametrize(
    "norm, eps, step, peer",
    [
        ("linf", 0.1, 0.01, lambda m: torchattacks.PGD(m, eps=0.1, alpha=0.01, steps=20, random_start=False)),
        ("l2", 1.5, 0.15, lambda m: torchattacks.PGDL2(m, eps=1.5, alpha=0.15, steps=20, random_start=False)),
    ],
)
def test_pgd_agrees_with_torchattacks(standard_model, mnist_test_batch, norm, eps, step, peer):
    x, y = mnist_test_batch
    ours = PGD(eps=eps, step=step, steps=20, norm=norm, random_start=False, keep_successful=False)
    acc_ours = accuracy(standard_model, ours(standard_model, x, y), y)
    acc_peer = accuracy(standard_model, peer(standard_model)(x, y), y)
    print(f"PGD-{norm}: ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9, "the comparison needs a budget where robust accuracy is informative"
    assert abs(acc_ours - acc_peer) <= 0.02
    # Keeping successful iterates can only find more adversarial examples.
    kept = PGD(eps=eps, step=step, steps=20, norm=norm, random_start=False)
    assert accuracy(standard_model, kept(standard_model, x, y), y) <= acc_ours


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 2.0)])
def test_pgd_respects_ball_and_box(standard_model, mnist_test_batch, norm, eps):
    x, y = mnist_test_batch
    x_adv = PGD(eps=eps, step=eps / 4, steps=10, norm=norm)(standard_model, x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max().item() <= eps * (1 + 1e-5)
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1
    assert not x_adv.requires_grad


def test_pgd_success_mask_and_iterations(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    attack = PGD(eps=0.1, step=0.01, steps=20)
    x_adv = attack(standard_model, x, y)
    with torch.no_grad():
        wrong = standard_model(x_adv).argmax(1) != y
    assert torch.equal(attack.last_success, wrong)
    assert (attack.last_iterations[wrong] <= 20).all() and (attack.last_iterations[~wrong] == 21).all()


def test_pgd_leaves_model_untouched(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    model = standard_model.train()
    try:
        model.zero_grad(set_to_none=True)
        PGD(eps=0.3, step=0.05, steps=3)(model, x[:20], y[:20])
        assert model.training and all(m.training for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_seeded_random_start_does_not_depend_on_batching(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:10], mnist_test_batch[1][:10]
    check_seeds_independent_of_batching(
        PGD(eps=0.3, step=0.05, steps=2), standard_model, x, y, torch.arange(100, 110), 4
    )


def _with_nan(x):
    x[0, 0, 0, 0] = float("nan")
    return x


@pytest.mark.parametrize("make_input, message", [(lambda x: x * 2 - 1, r"outside \[0,1\]"), (_with_nan, "NaN")])
def test_bad_images_are_refused(standard_model, mnist_test_batch, make_input, message):
    x, y = mnist_test_batch
    with pytest.raises(RobustlabError, match=message) as err:
        PGD()(standard_model, make_input(x[:4].clone()), y[:4])
    assert "fix:" in str(err.value) and "\n" not in str(err.value)


def test_inference_mode_is_refused(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    with torch.inference_mode(), pytest.raises(RobustlabError, match="inference_mode"):
        PGD()(standard_model, x[:4], y[:4])


@pytest.mark.parametrize("kwargs, message", [({"eps": -0.1}, "eps"), ({"norm": "l7"}, "unknown norm")])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(RobustlabError, match=message):
        PGD(**kwargs)
