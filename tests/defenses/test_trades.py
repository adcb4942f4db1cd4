"""TRADES: the loss equals CE + beta * KL on a hand-made batch; the inner attack ascends the KL."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax, rel_entr, softmax

from robustlab.defenses.trades import TradesKLAttack, trades_loss
from robustlab.models import MNISTCNN

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
LOGITS_ADV = np.array([[0.5, 1.5, -0.5], [1.0, 0.0, 1.0]])
Y = np.array([0, 2])


def test_trades_loss_matches_hand_computation():
    ce = -log_softmax(LOGITS, 1)[np.arange(2), Y].mean()
    kl = rel_entr(softmax(LOGITS, 1), softmax(LOGITS_ADV, 1)).sum(1).mean()
    got = trades_loss(torch.tensor(LOGITS), torch.tensor(LOGITS_ADV), torch.tensor(Y), beta=6.0)
    assert got.item() == pytest.approx(ce + 6.0 * kl, rel=1e-10)


def test_kl_attack_stays_in_ball_and_raises_kl():
    torch.manual_seed(0)
    model = MNISTCNN().eval()
    x = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    x_adv = TradesKLAttack(eps=0.3, step=0.05, steps=5)(model, x, y)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        p = F.softmax(model(x), 1)
        kl_adv = F.kl_div(F.log_softmax(model(x_adv), 1), p, reduction="batchmean")
        kl_start = F.kl_div(
            F.log_softmax(model((x + 0.001 * torch.randn_like(x)).clamp(0, 1)), 1), p, reduction="batchmean"
        )
    assert kl_adv > 10 * kl_start
    assert all(q.grad is None for q in model.parameters()) and not model.training
