"""IGR: the penalty equals the squared input-gradient norm, worked out analytically for a linear model."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses import IGR
from robustlab.defenses.igr import input_gradient_penalty


def test_penalty_is_squared_input_gradient_norm():
    torch.manual_seed(0)
    linear = nn.Linear(12, 4).double()
    model = nn.Sequential(nn.Flatten(), linear)
    x, y = torch.rand(5, 3, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    # d CE / d x = W^T (softmax(Wx + b) - onehot(y)) for a linear softmax classifier.
    with torch.no_grad():
        residual = F.softmax(linear(x.flatten(1)), 1) - F.one_hot(y, 4).double()
        expected = (residual @ linear.weight).pow(2).sum(1).mean()
    ce, penalty = input_gradient_penalty(model, x, y, "per_example")
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-10)
    assert ce.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    # DEEPSEC's scaling: the squared norm of the gradient of the batch-mean loss = per-example mean / B.
    _, batch_penalty = input_gradient_penalty(model, x, y, "batch")
    assert batch_penalty.item() == pytest.approx(expected.item() / 5, rel=1e-10)


def test_igr_loss_backpropagates_through_the_penalty():
    torch.manual_seed(0)
    module = IGR(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), lam=100.0, scaling="per_example")
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 3, 0])
    with_penalty = torch.autograd.grad(module.training_loss(x, y), module.model[1].weight)[0]
    module.lam = 0.0
    without = torch.autograd.grad(module.training_loss(x, y), module.model[1].weight)[0]
    assert not torch.allclose(with_penalty, without), "double backprop must reach the weights"
