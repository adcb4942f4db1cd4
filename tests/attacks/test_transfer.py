"""TransferAttack: examples made on a surrogate, judged on the target; loading the surrogate from a
checkpoint; the inner attack's result when surrogate and target are the same model."""

import torch
from hydra.utils import instantiate

from robustlab import RobustlabError
from robustlab.attacks import LLC, PGD, TransferAttack
from tests.helpers import make_cfg


def _pgd():
    return PGD(eps=0.2, step=0.02, steps=20)


def test_transfer_between_standard_models_is_weaker_than_white_box(
    standard_model, second_standard_model, mnist_test_batch
):
    _, target = second_standard_model
    x, y = mnist_test_batch[0][::2], mnist_test_batch[1][::2]
    seeds = torch.arange(len(x))
    transfer, white = TransferAttack(_pgd(), surrogate=standard_model), _pgd()
    x_adv = transfer(target, x, y, seeds=seeds)
    white(target, x, y, seeds=seeds)
    with torch.no_grad():
        correct = target(x).argmax(1) == y
        assert torch.equal(transfer.last_success, target(x_adv).argmax(1) != y)
    rate_transfer = transfer.last_success[correct].float().mean().item()
    rate_white = white.last_success[correct].float().mean().item()
    print(
        f"PGD eps 0.2 success on clean-correct target examples: transfer {rate_transfer:.3f}, "
        f"white-box {rate_white:.3f}"
    )
    assert 0.05 < rate_transfer < rate_white - 0.1
    assert transfer.kind == "blackbox" and torch.equal(transfer.last_queries, torch.ones(len(x), dtype=torch.long))
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1


def test_transfer_onto_the_surrogate_itself_is_the_inner_attack(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    seeds = torch.arange(len(x))
    transfer, direct = TransferAttack(_pgd(), surrogate=standard_model), _pgd()
    x_transfer = transfer(standard_model, x, y, seeds=seeds)
    assert torch.equal(x_transfer, direct(standard_model, x, y, seeds=seeds))
    assert torch.equal(transfer.last_success, direct.last_success)
    assert torch.equal(transfer.last_iterations, direct.last_iterations)


def test_surrogate_checkpoint_path_and_surrogate_targets(standard_model, second_standard_model, mnist_test_batch):
    path, surrogate = second_standard_model
    x, y = mnist_test_batch[0][::10], mnist_test_batch[1][::10]
    from_path = TransferAttack(LLC(eps=0.2), surrogate=str(path))
    from_module = TransferAttack(LLC(eps=0.2), surrogate=surrogate)
    assert torch.equal(from_path(standard_model, x, y), from_module(standard_model, x, y))
    with torch.no_grad():
        assert torch.equal(from_path.last_target, surrogate(x).argmin(1))
        assert torch.equal(
            from_path.last_success, standard_model(from_path(standard_model, x, y)).argmax(1) == from_path.last_target
        )


def test_transfer_config_without_surrogate_is_a_one_line_error(tmp_path, standard_model, mnist_test_batch):
    cfg = make_cfg("train", tmp_path, ["attack=[transfer]"])
    attack = instantiate(cfg.attack.transfer)
    assert isinstance(attack, TransferAttack) and isinstance(attack.attack, PGD)
    try:
        attack(standard_model, mnist_test_batch[0][:2], mnist_test_batch[1][:2])
    except RobustlabError as err:
        assert "surrogate" in str(err) and "fix:" in str(err) and "\n" not in str(err)
    else:
        raise AssertionError("a transfer attack without a surrogate ran")
