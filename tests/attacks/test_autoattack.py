"""AutoAttack: agreement with torchattacks' AutoAttack, no weaker than PGD, stage bookkeeping."""

import pytest
import torch
import torchattacks

from robustlab import RobustlabError
from robustlab.attacks import APGD, APGDT, FABT, PGD, Attack, AutoAttack, Square
from tests.attacks.helpers import accuracy, norms


def _like_torchattacks(eps, steps, targets, queries):
    """Our ensemble with torchattacks' AutoAttack settings: its APGD, APGD-T and FAB default to
    ``steps`` 10 and its Square rescales the p schedule to the query budget."""
    return AutoAttack(
        eps=eps,
        version="custom",
        attacks=[
            APGD(eps=eps, steps=steps),
            APGDT(eps=eps, steps=steps, n_targets=targets),
            FABT(eps=eps, steps=steps, n_targets=targets),
            Square(eps=eps, n_queries=queries, rescale_schedule=True),
        ],
    )


def _peer(model, eps, targets, queries):
    peer = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=targets + 1, seed=0)
    peer._autoattack.attacks[-1].n_queries = queries
    return peer


def test_autoattack_agrees_with_torchattacks(standard_model, mnist_test_batch):
    """torchattacks' standard AutoAttack (10 steps per stage, 3 targets, Square cut to 100 queries)."""
    x, y = mnist_test_batch[0][::2], mnist_test_batch[1][::2]
    ours = _like_torchattacks(0.12, 10, 3, 100)
    x_ours = ours(standard_model, x, y, seeds=torch.arange(len(x)))
    x_peer = _peer(standard_model, 0.12, 3, 100)(x, y)
    acc_ours, acc_peer = accuracy(standard_model, x_ours, y), accuracy(standard_model, x_peer, y)
    print(f"AutoAttack: robust accuracy ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}")
    assert 0.1 < acc_peer < 0.9
    assert abs(acc_ours - acc_peer) <= 0.02
    assert norms(x_ours - x, "linf").max() <= 0.12 * (1 + 1e-5)
    assert acc_ours == pytest.approx(1 - ours.last_success.float().mean().item())


@pytest.mark.slow
def test_standard_autoattack_agrees_with_torchattacks_and_beats_pgd100(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    seeds = torch.arange(len(x))
    ours = _like_torchattacks(0.1, 10, 9, 5000)
    acc_ours = accuracy(standard_model, ours(standard_model, x, y, seeds=seeds), y)
    acc_peer = accuracy(standard_model, _peer(standard_model, 0.1, 9, 5000)(x, y), y)
    full = AutoAttack(eps=0.1)
    acc_full = accuracy(standard_model, full(standard_model, x, y, seeds=seeds), y)
    acc_pgd = accuracy(standard_model, PGD(eps=0.1, step=0.01, steps=100)(standard_model, x, y, seeds=seeds), y)
    print(
        f"AutoAttack: ours {acc_ours:.3f}, torchattacks {acc_peer:.3f}; standard (100 steps) {acc_full:.3f}, "
        f"PGD-100 {acc_pgd:.3f}"
    )
    assert abs(acc_ours - acc_peer) <= 0.02
    assert acc_full <= acc_pgd


def test_autoattack_is_no_weaker_than_pgd(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][1::4], mnist_test_batch[1][1::4]
    seeds = torch.arange(len(x))
    aa = _like_torchattacks(0.1, 20, 3, 50)
    acc_aa = accuracy(standard_model, aa(standard_model, x, y, seeds=seeds), y)
    acc_pgd = accuracy(standard_model, PGD(eps=0.1, step=0.01, steps=40)(standard_model, x, y, seeds=seeds), y)
    print(f"AutoAttack (small budgets) {acc_aa:.3f}, PGD-40 {acc_pgd:.3f}")
    assert acc_aa <= acc_pgd and acc_pgd < 0.95


class _Spy(Attack):
    """Records what it was given; returns the images unchanged."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def perturb(self, model, x, y, seeds=None, target=None):
        self.seen = x.clone()
        return x


def test_stages_attack_only_robust_points_from_the_clean_image(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:60], mnist_test_batch[1][:60]
    spy = _Spy()
    aa = AutoAttack(eps=0.1, version="custom", attacks=[APGD(eps=0.1, steps=5), spy])
    x_adv = aa(standard_model, x, y, seeds=torch.arange(60))
    assert aa.stage_names == ["clean", "apgd-ce", "attack"]
    with torch.no_grad():
        clean_wrong = standard_model(x).argmax(1) != y
        adv_wrong = standard_model(x_adv).argmax(1) != y
    assert torch.equal(aa.last_stage == 0, clean_wrong)
    assert torch.equal(aa.last_success, adv_wrong) and (aa.last_stage[aa.last_success] >= 0).all()
    # The second stage saw exactly the clean images the first left robust.
    assert torch.equal(spy.seen, x[aa.last_stage == -1])
    assert torch.equal(x_adv[~aa.last_success], x[~aa.last_success])
    assert ((aa.last_stage == 1) | (aa.last_stage == 0) | (aa.last_stage == -1)).all()


def test_versions():
    assert [type(a) for a in AutoAttack(eps=0.3).attacks] == [APGD, APGDT, FABT, Square]
    rand = AutoAttack(eps=0.3, version="rand").attacks
    assert [a.loss for a in rand] == ["ce", "dlr"] and all(a.eot_iter == 20 for a in rand)
    l1 = AutoAttack(eps=10.0, norm="l1").attacks
    assert [type(a) for a in l1] == [APGD, APGDT] and all(a.large_reps for a in l1)
    for bad in (
        lambda: AutoAttack(version="plus"),
        lambda: AutoAttack(version="custom"),
        lambda: AutoAttack(attacks=[APGD()]),
        lambda: AutoAttack(eps=-1),
    ):
        with pytest.raises(RobustlabError):
            bad()
