"""EOT, BPDA and adapt on toy defended models: a randomised one (Gaussian input noise) and one with
non-differentiable preprocessing (bit-depth reduction), both declaring it as DefendedModels."""

import pytest
import torch
from torch import nn

from robustlab import RobustlabError
from robustlab.attacks import BPDA, EOT, PGD, SPSA, adapt
from robustlab.defenses import RobustClassifier
from robustlab.models.base import DefendedModel


class Noisy(DefendedModel):
    """Randomised at inference: classifies ``x`` plus Gaussian noise."""

    randomized = True

    def __init__(self, net: nn.Module, sigma: float):
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x):
        return self.net((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


class BitDepth(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.levels = 2**bits - 1

    def forward(self, x):
        return torch.round(x * self.levels) / self.levels


class Squeezed(DefendedModel):
    """Non-differentiable preprocessing: ``classifier(preprocess(x))``, whose input gradient is zero."""

    def __init__(self, net: nn.Module, bits: int = 3):
        super().__init__()
        self.preprocess, self.classifier = BitDepth(bits), net

    def preprocessors(self):
        return [self.preprocess]

    def forward(self, x):
        return self.classifier(self.preprocess(x))


def _expected_accuracy(model, x, y, passes=20):
    with torch.no_grad():
        return torch.stack([(model(x).argmax(1) == y).float() for _ in range(passes)]).mean().item()


def test_eot_pgd_is_stronger_than_pgd_on_a_randomised_model(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    model, eps = Noisy(standard_model, sigma=0.5), 0.15
    torch.manual_seed(0)
    plain = PGD(eps=eps, step=eps / 4, steps=10)
    x_plain = plain(model, x, y)
    eot = EOT(PGD(eps=eps, step=eps / 4, steps=10), n=10)
    x_eot = eot(model, x, y)
    clean, acc_plain, acc_eot = (_expected_accuracy(model, v, y) for v in (x, x_plain, x_eot))
    print(
        f"noisy model (sigma 0.5), eps {eps}: expected accuracy clean {clean:.3f}, PGD {acc_plain:.3f}, "
        f"EOT-10 PGD {acc_eot:.3f}"
    )
    assert clean > 0.7 and acc_eot < acc_plain - 0.04
    assert (x_eot - x).abs().max() <= eps * (1 + 1e-6) and 0 <= x_eot.min() and x_eot.max() <= 1
    assert eot.last_success.shape == y.shape and eot.kind == "whitebox"


def test_eot_averages_the_logits_of_n_passes(standard_model, mnist_test_batch):
    x = mnist_test_batch[0][:5]
    calls = []
    model = nn.Sequential(standard_model)
    model.register_forward_hook(lambda m, i, o: calls.append(o))
    from robustlab.attacks.adaptive import Expectation

    with torch.no_grad():
        out = Expectation(model, 4)(x)
    assert len(calls) == 4 and torch.allclose(out, torch.stack(calls).mean(0))


def test_bpda_pgd_succeeds_where_pgd_gets_zero_gradients(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][::4], mnist_test_batch[1][::4]
    model = Squeezed(standard_model)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x_grad = x.clone().requires_grad_()
    assert torch.autograd.grad(nn.functional.cross_entropy(model(x_grad), y), x_grad)[0].abs().max() == 0
    plain = PGD(eps=0.3, step=0.05, steps=10, random_start=False)
    x_plain = plain(model, x, y)
    bpda = BPDA(PGD(eps=0.3, step=0.05, steps=10, random_start=False))
    x_bpda = bpda(model, x, y)
    rate_plain, rate_bpda = (a.last_success[correct].float().mean().item() for a in (plain, bpda))
    print(f"3-bit squeezed model, eps 0.3: PGD success {rate_plain:.3f}, BPDA-PGD success {rate_bpda:.3f}")
    assert rate_plain == 0 and torch.equal(x_plain, x)
    assert rate_bpda > 0.8
    with torch.no_grad():
        assert torch.equal(bpda.last_success, model(x_bpda).argmax(1) != y)
    assert (x_bpda - x).abs().max() <= 0.3 + 1e-6 and 0 <= x_bpda.min() and x_bpda.max() <= 1
    # The straight-through hook is gone afterwards: the defended model is unchanged.
    x_probe = x[:4].clone().requires_grad_()
    probe = torch.autograd.grad(model(x_probe).sum(), x_probe)[0]
    assert probe.abs().max() == 0


def test_wrappers_leave_the_model_untouched(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:10], mnist_test_batch[1][:10]
    for model in (Noisy(standard_model, 0.3), Squeezed(standard_model)):
        model.train()
        try:
            model.zero_grad(set_to_none=True)
            adapt(PGD(eps=0.1, step=0.05, steps=2), model, eot_samples=2)(model, x, y)
            assert all(m.training for m in model.modules())
            assert all(p.grad is None for p in model.parameters())
        finally:
            standard_model.eval()


def test_adapt_follows_the_flags(standard_model):
    pgd = PGD(eps=0.1)
    assert adapt(pgd, standard_model) is pgd
    noisy = adapt(pgd, Noisy(standard_model, 0.3), eot_samples=7)
    assert isinstance(noisy, EOT) and noisy.n == 7 and noisy.attack is pgd
    squeezed = adapt(pgd, Squeezed(standard_model))
    assert isinstance(squeezed, BPDA) and squeezed.attack is pgd
    both = adapt(pgd, Squeezed(Noisy(standard_model, 0.3)))
    assert isinstance(both, BPDA) and isinstance(both.attack, EOT) and both.attack.attack is pgd
    assert adapt(noisy, Noisy(standard_model, 0.3)) is noisy
    assert isinstance(adapt(noisy, Squeezed(Noisy(standard_model, 0.3))), BPDA)
    spsa = SPSA(eps=0.1)
    assert adapt(spsa, Squeezed(standard_model)) is spsa, "a black-box attack needs no BPDA"
    decided = adapt(spsa, Squeezed(Noisy(standard_model, 0.3)), eot_samples=7, draws=4)
    assert isinstance(decided, EOT) and decided.n == 4 and decided.attack is spsa, "black-box: decided on 4 draws"


def test_adapt_finds_flags_inside_a_lightning_wrapper(standard_model, mnist_test_batch):
    """The attack callback attacks the LightningModule, whose ``model`` is the defended wrapper."""
    x, y = mnist_test_batch[0][::10], mnist_test_batch[1][::10]
    module = RobustClassifier(Squeezed(standard_model)).eval()
    attack = adapt(PGD(eps=0.3, step=0.05, steps=10, random_start=False), module)
    x_adv = attack(module, x, y)
    with torch.no_grad():
        correct = module(x).argmax(1) == y
        assert torch.equal(attack.last_success, module(x_adv).argmax(1) != y)
    assert attack.last_success[correct].float().mean() > 0.8


def test_bpda_input_errors(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][:4], mnist_test_batch[1][:4]
    flatten = nn.Flatten()
    cases = [
        (BPDA(PGD(eps=0.1, steps=1)), standard_model, "declares no preprocessors"),
        (BPDA(PGD(eps=0.1, steps=1), transform=BitDepth(3)), Squeezed(standard_model), "never called"),
        (
            BPDA(PGD(eps=0.1, steps=1), transform=flatten),
            nn.Sequential(flatten, nn.Unflatten(1, (1, 28, 28)), standard_model),
            "shape-preserving",
        ),
    ]
    for attack, model, message in cases:
        with pytest.raises(RobustlabError, match=message) as err:
            attack(model, x, y)
        assert "fix:" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RobustlabError, match="wraps an attack"):
        EOT(standard_model)
    with pytest.raises(RobustlabError, match="n must be"):
        EOT(PGD(), n=0)
