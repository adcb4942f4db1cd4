"""MART: the loss equals the boosted CE plus the misclassification-weighted KL, by hand."""

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from robustlab.defenses.mart import mart_loss


def test_mart_loss_matches_hand_computation():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [0.0, 0.0, 0.0]])
    logits_adv = np.array([[0.5, 1.5, -0.5], [1.0, 0.0, 1.0], [0.3, -0.2, 0.9]])
    y = np.array([0, 2, 1])
    p, p_adv = softmax(logits, 1), softmax(logits_adv, 1)
    rows = np.arange(3)
    masked = p_adv.copy()
    masked[rows, y] = -np.inf
    runner_up = masked.argmax(1)
    bce = -np.log(p_adv[rows, y]) - np.log(1.0001 - p_adv[rows, runner_up] + 1e-12)
    kl = rel_entr(p, p_adv).sum(1)
    expected = (bce + 6.0 * kl * (1 - p[rows, y])).mean()
    got = mart_loss(torch.tensor(logits), torch.tensor(logits_adv), torch.tensor(y), beta=6.0)
    assert got.item() == pytest.approx(expected, rel=1e-8)
