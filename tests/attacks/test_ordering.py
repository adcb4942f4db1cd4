"""Stronger-than-weaker checks that do not need a peer."""

import torch

from robustlab.attacks import BIM, CW2, FGSM, ILLC, LLC, MIFGSM, RLLC
from tests.attacks.helpers import accuracy, norms


def test_iterative_beats_single_step(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    fgsm, bim = (
        accuracy(standard_model, FGSM(0.15)(standard_model, x, y), y),
        accuracy(standard_model, BIM(0.15, 0.01, 15)(standard_model, x, y), y),
    )
    print(f"robust accuracy at eps 0.15: FGSM {fgsm:.3f}, BIM {bim:.3f}")
    assert bim <= fgsm and fgsm > 0.1


def test_illc_beats_llc_and_rllc_in_targeted_success(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    rates = {}
    for attack in (LLC(0.3), RLLC(0.3), ILLC(0.3, 0.05, 10)):
        attack(standard_model, x, y, seeds=torch.arange(len(x)))
        rates[type(attack).__name__] = attack.last_success.float().mean().item()
    print(f"least-likely targeted success at eps 0.3: {rates}")
    assert rates["ILLC"] >= rates["LLC"] and rates["ILLC"] >= rates["RLLC"] and rates["ILLC"] > 0.3


def test_targeted_mifgsm_hits_its_targets(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    attack = MIFGSM(0.3, 0.05, 15, targeted=True)
    attack(standard_model, x, y, seeds=torch.arange(len(x)))
    assert attack.last_success.float().mean() > 0.5 and (attack.last_target != y).all()


def test_cw2_confidence_margin_is_met(standard_model, mnist_test_batch):
    """kappa asks for a logit margin: every success clears it, and costs more distance than kappa 0."""
    x, y = mnist_test_batch[0][::10], mnist_test_batch[1][::10]
    plain = CW2(kappa=0, steps=50, binary_steps=1, lr=0.05, c0=10.0, targeted=False)
    strong = CW2(kappa=3, steps=50, binary_steps=1, lr=0.05, c0=10.0, targeted=False)
    d0, x_strong = norms(plain(standard_model, x, y) - x, 2), strong(standard_model, x, y)
    d3 = norms(x_strong - x, 2)
    both = plain.last_success & strong.last_success
    assert both.sum() >= 5 and d3[both].median() > d0[both].median()
    with torch.no_grad():
        logits = standard_model(x_strong)[strong.last_success]
    own = logits.gather(1, y[strong.last_success][:, None]).squeeze(1)
    assert (logits.max(1).values - own >= 3 - 1e-3).all()
