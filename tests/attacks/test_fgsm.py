"""FGSM against torchattacks' FGSM on a trained model."""

import torchattacks

from robustlab.attacks import FGSM
from tests.attacks.helpers import accuracy


def test_fgsm_agrees_with_torchattacks(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    ours = FGSM(eps=0.1)(standard_model, x, y)
    theirs = torchattacks.FGSM(standard_model, eps=0.1)(x, y)
    acc_ours, acc_theirs = accuracy(standard_model, ours, y), accuracy(standard_model, theirs, y)
    print(f"FGSM: ours {acc_ours:.3f}, torchattacks {acc_theirs:.3f}")
    assert 0.1 < acc_theirs < 0.95
    assert abs(acc_ours - acc_theirs) <= 0.02
    assert (ours - x).abs().max().item() <= 0.1 + 1e-6 and 0 <= ours.min() and ours.max() <= 1
