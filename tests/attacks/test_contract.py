"""Every attack's contract: ball and box, success mask, targets, failures, model untouched, input checks."""

import pytest
import torch
from torch import nn

from robustlab import RobustlabError
from robustlab.attacks import (
    APGD,
    APGDT,
    BIM,
    BLB,
    CW2,
    EAD,
    EOT,
    FABT,
    FGSM,
    ILLC,
    JSMA,
    LLC,
    MIFGSM,
    PGD,
    RFGSM,
    RLLC,
    SPSA,
    AutoAttack,
    BoundaryAttack,
    DeepFool,
    NAttack,
    OptMargin,
    Square,
    TransferAttack,
)

# (attack, norm of its budget, budget) with small step counts: the contract, not the strength.
ATTACKS = [
    (FGSM(eps=0.2), "linf", 0.2),
    (RFGSM(eps=0.2), "linf", 0.2),
    (RLLC(eps=0.2), "linf", 0.2),
    (LLC(eps=0.2), "linf", 0.2),
    (BIM(eps=0.2, step=0.05, steps=5), "linf", 0.2),
    (ILLC(eps=0.2, step=0.05, steps=5), "linf", 0.2),
    (MIFGSM(eps=0.2, step=0.05, steps=5), "linf", 0.2),
    (MIFGSM(eps=0.2, step=0.05, steps=5, targeted=True), "linf", 0.2),
    (PGD(eps=0.2, step=0.05, steps=5), "linf", 0.2),
    (PGD(eps=0.2, step=0.05, steps=5, keep_successful=False), "linf", 0.2),
    (PGD(eps=1.5, step=0.5, steps=5, norm="l2"), 2, 1.5),
    (PGD(eps=6.0, step=1.0, steps=5, norm="l1"), 1, 6.0),
    (DeepFool(steps=10), None, None),
    (CW2(steps=20, binary_steps=2, lr=0.05, c0=0.1), None, None),
    (EAD(steps=20, binary_steps=2, decision_rule="L1", c0=0.1), None, None),
    (SPSA(eps=0.2, steps=3, samples=4), "linf", 0.2),
    (NAttack(eps=0.2, steps=3, population=8), "linf", 0.2),
    (BoundaryAttack(steps=20), None, None),
    (TransferAttack(FGSM(eps=0.2), surrogate=nn.Sequential(nn.Flatten(), nn.Linear(784, 10))), "linf", 0.2),
    (EOT(BIM(eps=0.2, step=0.05, steps=3), n=2), "linf", 0.2),
    (APGD(eps=0.2, steps=5), "linf", 0.2),
    (APGD(eps=1.5, steps=5, norm="l2", loss="dlr"), 2, 1.5),
    (APGD(eps=6.0, steps=5, norm="l1"), 1, 6.0),
    (APGDT(eps=0.2, steps=3, n_targets=2), "linf", 0.2),
    (FABT(eps=0.2, steps=5, n_targets=2), "linf", 0.2),
    (Square(eps=0.2, n_queries=20), "linf", 0.2),
    (Square(eps=1.5, norm="l2", n_queries=20), 2, 1.5),
    (
        AutoAttack(eps=0.2, version="custom", attacks=[APGD(eps=0.2, steps=3), Square(eps=0.2, n_queries=10)]),
        "linf",
        0.2,
    ),
    (JSMA(gamma=0.05), None, None),
    (BLB(c0=10.0, steps=10, binary_steps=1), None, None),
    (OptMargin(c0=1.0, steps=10, binary_steps=1, directions=5), None, None),
]
IDS = [repr(a) for a, _, _ in ATTACKS]


@pytest.mark.parametrize("attack, norm, eps", ATTACKS, ids=IDS)
def test_ball_box_success_and_model_untouched(standard_model, mnist_test_batch, attack, norm, eps):
    x, y = mnist_test_batch[0][::5], mnist_test_batch[1][::5]
    torch.manual_seed(0)  # the model runs in train mode: make its dropout independent of test order
    model = standard_model.train()
    try:
        model.zero_grad(set_to_none=True)
        x_adv = attack(model, x, y, seeds=torch.arange(len(x)))
        assert model.training and all(m.training for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()
    assert not x_adv.requires_grad and x_adv.shape == x.shape
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1
    delta = (x_adv - x).flatten(1)
    if norm is not None:
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(p=norm, dim=1)
        assert size.max().item() <= eps * (1 + 1e-5)
    success = attack.last_success
    assert success.dtype == torch.bool and success.shape == y.shape
    if attack.targeted:
        assert attack.last_target.shape == y.shape and (attack.last_target != y).all()
    if attack.clean_on_failure:
        # Failures come back as the clean image (never zeros), successes as real perturbations.
        assert torch.equal(x_adv[~success], x[~success])
        assert (x_adv.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("attack", [a for a, _, _ in ATTACKS], ids=IDS)
def test_success_mask_matches_predictions_in_eval_mode(standard_model, mnist_test_batch, attack):
    x, y = mnist_test_batch[0][1::10], mnist_test_batch[1][1::10]
    x_adv = attack(standard_model, x, y, seeds=torch.arange(len(x)))
    with torch.no_grad():
        pred = standard_model(x_adv).argmax(1)
    expected = pred == attack.last_target if attack.targeted else pred != y
    assert torch.equal(attack.last_success, expected)
    # The attack hands back the logits of what it returns, so that nobody runs the model on x_adv again (equal
    # up to float32 rounding: they may come from another batch composition).
    torch.testing.assert_close(attack.last_logits, standard_model(x_adv).detach(), rtol=1e-4, atol=1e-4)
    assert torch.equal(attack.last_logits.argmax(1), pred)
    with torch.no_grad():
        clean_logits = standard_model(x)
    given = attack.run(standard_model, x, y, seeds=torch.arange(len(x)), clean_logits=clean_logits)
    assert torch.equal(given.x_adv, x_adv) and torch.equal(given.success, attack.last_success)
    if attack.clean_on_failure:
        assert torch.equal(x_adv[~expected], x[~expected])
    if attack.last_iterations is not None:
        assert attack.last_iterations.shape == y.shape


def test_explicit_targets_are_used(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:20], mnist_test_batch[1][:20]
    target = (y + 3) % 10
    attack = ILLC(eps=0.3, step=0.05, steps=10)
    attack(standard_model, x, y, target=target)
    assert torch.equal(attack.last_target, target)
    attack(standard_model, x, y, target=7)
    assert (attack.last_target == 7).all()


def test_least_likely_and_seeded_random_targets(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:30], mnist_test_batch[1][:30]
    llc = LLC(eps=0.1)
    llc(standard_model, x, y)
    with torch.no_grad():
        assert torch.equal(llc.last_target, standard_model(x).argmin(1))
    seeds = torch.arange(500, 530)
    attack = MIFGSM(eps=0.1, step=0.02, steps=2, targeted=True)
    attack(standard_model, x, y, seeds=seeds)
    whole = attack.last_target
    attack(standard_model, x[10:], y[10:], seeds=seeds[10:])
    assert torch.equal(attack.last_target, whole[10:]) and (whole != y).all()
    # Uniform over the nine wrong classes: every wrong class shows up on 200 draws.
    y_many = torch.zeros(200, dtype=torch.long)
    from robustlab.attacks.base import choose_targets

    drawn = choose_targets(torch.zeros(200, 10), y_many, "random", torch.arange(200))
    assert set(drawn.tolist()) == set(range(1, 10))


class _OneClass(nn.Module):
    def forward(self, x):
        return x.flatten(1).sum(1, keepdim=True)


def test_targeted_attack_on_one_class_model_is_refused(mnist_test_batch):
    x, y = mnist_test_batch[0][:4], torch.zeros(4, dtype=torch.long)
    with pytest.raises(RobustlabError, match="1 class") as err:
        LLC(eps=0.1)(_OneClass(), x, y)
    assert "\n" not in str(err.value)


def test_target_for_untargeted_attack_is_refused(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:4], mnist_test_batch[1][:4]
    with pytest.raises(RobustlabError, match="untargeted"):
        BIM(eps=0.1)(standard_model, x, y, target=3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RFGSM(eps=-1),
        lambda: BIM(eps=-0.1),
        lambda: LLC(eps=-0.1),
        lambda: PGD(norm="l3"),
        lambda: PGD(norm="l1", quantile=2.0),
        lambda: CW2(c0=-1.0),
        lambda: EAD(decision_rule="L2"),
        lambda: DeepFool(steps=0),
        lambda: SPSA(eps=-1),
        lambda: NAttack(sigma=0.0),
        lambda: BoundaryAttack(spherical_step=0.0),
    ],
)
def test_bad_parameters_are_refused(make):
    with pytest.raises(RobustlabError) as err:
        make()
    assert "fix:" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "attack",
    [
        DeepFool(steps=2),
        CW2(steps=2, binary_steps=1),
        EAD(steps=2, binary_steps=1),
        LLC(eps=0.1),
        SPSA(steps=1, samples=2),
        NAttack(steps=1, population=2),
        BoundaryAttack(steps=1),
        JSMA(gamma=0.01),
        BLB(steps=1, binary_steps=1),
        OptMargin(steps=1, binary_steps=1),
    ],
    ids=repr,
)
def test_bad_images_and_inference_mode_are_refused(standard_model, mnist_test_batch, attack):
    x, y = mnist_test_batch[0][:4], mnist_test_batch[1][:4]
    with pytest.raises(RobustlabError, match=r"outside \[0,1\]"):
        attack(standard_model, x * 2 - 1, y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(RobustlabError, match="NaN"):
        attack(standard_model, bad, y)
    with torch.inference_mode(), pytest.raises(RobustlabError, match="inference_mode"):
        attack(standard_model, x, y)
