"""PGD-AT: loss variants, the eps warm-up schedule and the mode used to generate examples."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from robustlab import RobustlabError
from robustlab.attacks import PGD
from robustlab.defenses import PGDAdversarialTraining, Standard
from robustlab.models import MNISTCNN


class ModeSpy(PGD):
    """A deterministic PGD that records the mode of every module while it runs."""

    def perturb(self, model, *args, **kwargs):
        self.modes = {m.training for m in model.modules()}
        return super().perturb(model, *args, **kwargs)


def _module(**kwargs):
    torch.manual_seed(0)
    attack = ModeSpy(eps=0.3, step=0.1, steps=3, random_start=False, keep_successful=False)
    return PGDAdversarialTraining(MNISTCNN(), attack, **kwargs), attack


def _batch():
    torch.manual_seed(1)
    return torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))


def test_adversarial_loss_is_ce_on_pgd_examples():
    module, _ = _module()
    module.eval()  # no dropout: the loss is deterministic
    x, y = _batch()
    x_adv = PGD(eps=0.3, step=0.1, steps=3, random_start=False, keep_successful=False)(module.model, x, y)
    loss = module.training_loss(x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(module.model(x_adv), y).item(), rel=1e-6)
    assert loss > F.cross_entropy(module.model(x), y)


def test_mixed_loss_weights_clean_and_adversarial_terms():
    module, _ = _module(loss="mixed", adv_weight=0.25)
    module.eval()  # no dropout: the loss is deterministic
    x, y = _batch()
    x_adv = module.adversarial(x, y)
    expected = 0.75 * F.cross_entropy(module.model(x), y) + 0.25 * F.cross_entropy(module.model(x_adv), y)
    assert module.training_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("attack_mode, expected", [("eval", {False}), ("train", {True, False})])
def test_attack_mode_and_restoration(attack_mode, expected):
    module, attack = _module(attack_mode=attack_mode)
    module.train()
    module.model.net[0].eval()  # a module with its own mode must get it back
    x, y = _batch()
    module.zero_grad(set_to_none=True)
    module.adversarial(x, y)
    assert attack.modes == expected
    assert module.model.training and not module.model.net[0].training and module.model.net[1].training
    assert all(p.grad is None for p in module.parameters()), "generating examples must not touch parameter grads"


def test_warmup_schedule_ramps_eps_and_step():
    module, attack = _module(warmup_epochs=2)
    module._trainer = SimpleNamespace(num_training_batches=10, global_step=4)
    module.adversarial(*_batch())
    assert attack.eps == pytest.approx(0.3 * 5 / 20) and attack.step == pytest.approx(0.1 * 5 / 20)
    module._trainer.global_step = 100
    module.adversarial(*_batch())
    assert attack.eps == pytest.approx(0.3) and attack.step == pytest.approx(0.1)


def test_bad_options_are_refused():
    with pytest.raises(RobustlabError, match="unknown PGD-AT loss"):
        _module(loss="trades")
    with pytest.raises(RobustlabError, match="attack_mode"):
        _module(attack_mode="half")


def test_standard_loss_is_plain_cross_entropy():
    module = Standard(MNISTCNN()).eval()
    x, y = _batch()
    assert module.training_loss(x, y).item() == pytest.approx(F.cross_entropy(module(x), y).item())
