"""Boundary Attack: perturbation norms against Foolbox 3's BoundaryAttack from the same starting
points, adversarial and shrinking results, failures, query counting, the eps budget, input checks."""

import foolbox
import pytest
import torch
from torch import nn

from robustlab import RobustlabError
from robustlab.attacks import BoundaryAttack
from robustlab.rng import Streams


def _correct(model, x, y):
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep], y[keep]


def _compare_with_foolbox(model, x, y, steps):
    ours = BoundaryAttack(steps=steps)
    x_ours = ours(model, x, y, seeds=torch.arange(len(x)))
    streams = Streams(torch.arange(len(x)))
    start, _, found, _ = ours._start(model, x, y, streams, torch.zeros(len(x), dtype=torch.long))
    assert found.all()
    torch.manual_seed(0)
    x_peer = foolbox.attacks.BoundaryAttack(steps=steps).run(
        foolbox.PyTorchModel(model, bounds=(0, 1)), x, foolbox.criteria.Misclassification(y), starting_points=start
    )
    norm_ours, norm_peer = ((v - x).flatten(1).norm(dim=1) for v in (x_ours, x_peer))
    norm_start = (start - x).flatten(1).norm(dim=1)
    print(
        f"L2 norms after {steps} steps: start {norm_start.mean():.3f}, ours {norm_ours.mean():.3f}, "
        f"foolbox {norm_peer.mean():.3f}; mean queries {ours.last_queries.float().mean():.0f}"
    )
    assert ours.last_success.all()
    with torch.no_grad():
        assert (model(x_ours).argmax(1) != y).all()
    assert (norm_ours <= norm_start + 1e-5).all() and norm_ours.mean() < 0.8 * norm_start.mean()
    assert abs(norm_ours.mean() / norm_peer.mean() - 1) <= 0.10
    assert 0 <= x_ours.min() and x_ours.max() <= 1


def test_boundary_norms_agree_with_foolbox(mlp_model, mnist_test_batch):
    """Same model, starting points and step budget; the directions are random in both, so the mean
    norm over 20 examples is compared (spread over seeds on this setting: about 3%)."""
    x, y = _correct(mlp_model, mnist_test_batch[0][::10], mnist_test_batch[1][::10])
    _compare_with_foolbox(mlp_model, x, y, steps=2000)


@pytest.mark.slow
def test_boundary_norms_agree_with_foolbox_on_the_standard_cnn(standard_model, mnist_test_batch):
    x, y = _correct(standard_model, mnist_test_batch[0][::10], mnist_test_batch[1][::10])
    _compare_with_foolbox(standard_model, x, y, steps=3000)


def test_boundary_counts_its_queries(mlp_model, mnist_test_batch, counting):
    x, y = _correct(mlp_model, mnist_test_batch[0][::20], mnist_test_batch[1][::20])
    model = counting(mlp_model)
    attack = BoundaryAttack(steps=25, stats_every=5)
    attack(model, x, y, seeds=torch.arange(len(x)))
    queries = attack.last_queries
    assert model.images == queries.sum().item()
    assert (queries <= attack.max_queries).all()
    # After the start: one query per step plus one per 5 steps for the spherical statistics.
    assert (attack.last_iterations == 25).all()
    assert (queries >= 1 + 1 + attack.init_steps + 25 + 5).all()


class _Constant(nn.Module):
    """Predicts class 0 whatever the input: no adversarial example exists for label 0."""

    def forward(self, x):
        return torch.tensor([1.0, 0.0]).expand(len(x), 2)


def test_boundary_without_an_adversarial_start_returns_clean(mnist_test_batch):
    x = mnist_test_batch[0][:3]
    attack = BoundaryAttack(steps=10, init_draws=7)
    x_adv = attack(_Constant(), x, torch.tensor([0, 1, 0]))
    assert torch.equal(attack.last_success, torch.tensor([False, True, False]))
    assert torch.equal(x_adv, x)
    assert attack.last_queries.tolist() == [1 + 7, 1, 1 + 7]


def test_boundary_eps_budget(mlp_model, mnist_test_batch):
    x, y = _correct(mlp_model, mnist_test_batch[0][::20], mnist_test_batch[1][::20])
    free = BoundaryAttack(steps=300)
    norms = (free(mlp_model, x, y, seeds=torch.arange(len(x))) - x).flatten(1).norm(dim=1)
    eps = norms.median().item()
    bounded = BoundaryAttack(steps=300, eps=eps)
    x_adv = bounded(mlp_model, x, y, seeds=torch.arange(len(x)))
    assert torch.equal(bounded.last_success, norms <= eps)
    assert torch.equal(x_adv[~bounded.last_success], x[~bounded.last_success])
    assert bounded.last_queries.sum() < free.last_queries.sum()


@pytest.mark.parametrize(
    "kwargs", [{"steps": -1}, {"spherical_step": 0.0}, {"source_step": -1.0}, {"eps": -1.0}, {"stats_every": 0}]
)
def test_bad_boundary_parameters_are_refused(kwargs):
    with pytest.raises(RobustlabError) as err:
        BoundaryAttack(**kwargs)
    assert "fix:" in str(err.value) and "\n" not in str(err.value)
