"""NAT: the loss is (CE + 0.3 CE_adv) / 1.3 by hand; examples are one LLC step at a per-example eps
drawn from a clipped half-normal; the defense trains, reloads and evaluates."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax

from robustlab.defenses import NAT
from robustlab.defenses.nat import mixed_loss
from robustlab.models import MNISTCNN
from tests.defenses.helpers import train_reload_evaluate


def test_mixed_loss_matches_hand_computation():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    logits_adv = np.array([[0.5, 1.5, -0.5], [1.0, 0.0, 1.0]])
    y = np.array([0, 2])
    ce = -log_softmax(logits, 1)[np.arange(2), y].mean()
    ce_adv = -log_softmax(logits_adv, 1)[np.arange(2), y].mean()
    got = mixed_loss(torch.tensor(logits), torch.tensor(logits_adv), torch.tensor(y), 0.3)
    assert got.item() == pytest.approx((ce + 0.3 * ce_adv) / 1.3, rel=1e-12)


def test_eps_is_a_clipped_half_normal():
    module = NAT(MNISTCNN(), sigma=50 / 255, eps_max=0.3)
    torch.manual_seed(0)
    eps = module.sample_eps(200_000, torch.device("cpu"))
    assert eps.min() >= 0 and eps.max() == pytest.approx(0.3)
    # P(|N(0, s)| > 0.3) = 2 (1 - Phi(0.3 / s)) = 0.1260 for s = 50/255; the median of |N(0, s)| is 0.6745 s.
    assert (eps == 0.3).float().mean().item() == pytest.approx(0.1260, abs=0.004)
    assert eps.median().item() == pytest.approx(0.6745 * 50 / 255, rel=0.02)


def test_examples_are_one_llc_step_at_each_examples_eps():
    torch.manual_seed(0)
    module = NAT(MNISTCNN(), sigma=50 / 255, eps_max=0.3)
    module.eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.manual_seed(1)
    x_adv = module.adversarial(x, y)
    torch.manual_seed(1)
    eps = module.sample_eps(8, x.device).view(-1, 1, 1, 1)
    xr = x.clone().requires_grad_(True)
    logits = module.model(xr)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, logits.argmin(1), reduction="sum"), xr)
    expected = (x - eps * grad.sign()).clamp(0, 1)  # descend the least-likely class's cross-entropy
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert len(set(eps.flatten().tolist())) == 8, "one eps per example"
    assert module.attack.eps == pytest.approx(eps.mean().item()), "train/eps logs the batch mean"
    assert all(p.grad is None for p in module.parameters())


def test_nat_trains_reloads_and_evaluates(tmp_path, mnist_test_batch):
    train_reload_evaluate(tmp_path, "nat", [], *mnist_test_batch)
