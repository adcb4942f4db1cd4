"""Early exit (``early_stop``): per attack, the same examples are broken with and without it, and the returned
images stay valid adversarial examples inside the ball."""

import pytest
import torch
from torch import nn

from robustlab.attacks import APGD, APGDT, BIM, EOT, FABT, ILLC, MIFGSM, PGD
from robustlab.models.base import DefendedModel

ITERATIVE = {
    "pgd_linf": lambda stop: PGD(eps=0.1, step=0.01, steps=20, early_stop=stop),
    "pgd_l2": lambda stop: PGD(eps=1.0, step=0.1, steps=15, norm="l2", early_stop=stop),
    "pgd_l1": lambda stop: PGD(eps=6.0, step=1.0, steps=10, norm="l1", random_start=False, early_stop=stop),
    "bim": lambda stop: BIM(eps=0.08, step=0.01, steps=10, early_stop=stop),
    "illc": lambda stop: ILLC(eps=0.2, step=0.05, steps=8, early_stop=stop),
    "mifgsm": lambda stop: MIFGSM(eps=0.1, step=0.02, steps=10, early_stop=stop),
    "tmifgsm": lambda stop: MIFGSM(eps=0.15, step=0.03, steps=10, targeted=True, early_stop=stop),
    "apgd_ce": lambda stop: APGD(eps=0.08, steps=20, early_stop=stop),
    "apgd_dlr": lambda stop: APGD(eps=0.08, loss="dlr", steps=20, restarts=2, early_stop=stop),
    "apgdt": lambda stop: APGDT(eps=0.06, steps=10, n_targets=3, early_stop=stop),
    "fabt": lambda stop: FABT(eps=0.08, steps=10, n_targets=3, early_stop=stop),
}
#: Attacks whose ``last_iterations`` is each example's first successful step in both modes.
FIRST_SUCCESS = {"pgd_linf", "pgd_l2", "pgd_l1", "bim", "illc", "mifgsm", "tmifgsm", "apgd_ce", "apgd_dlr"}


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return {"linf": flat.abs().amax(1), "l2": flat.norm(dim=1), "l1": flat.abs().sum(1)}[norm]


@pytest.mark.parametrize("name", list(ITERATIVE))
def test_early_stop_breaks_the_same_examples(standard_model, mnist_test_batch, name):
    x, y = mnist_test_batch[0][::2], mnist_test_batch[1][::2]
    seeds = torch.arange(len(x))
    full, early = ITERATIVE[name](False), ITERATIVE[name](True)
    a, b = full.run(standard_model, x, y, seeds=seeds), early.run(standard_model, x, y, seeds=seeds)
    assert 0 < int(a.success.sum()) < len(x), "the budget must leave both broken and robust examples"
    assert torch.equal(a.success, b.success)
    if name in FIRST_SUCCESS:
        assert torch.equal(a.iterations, b.iterations)
    with torch.no_grad():
        preds = [standard_model(r.x_adv).argmax(1) for r in (a, b)]
    for result, pred in zip((a, b), preds):
        goal = pred == result.target if result.target is not None else pred != y
        assert torch.equal(result.success, goal) and torch.equal(result.logits.argmax(1), pred)
        size = _norm(result.x_adv - x, early.norm)
        assert (size <= early.eps * (1 + 1e-5)).all() and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    if name == "fabt":  # without early exit FAB keeps shrinking: never a larger perturbation
        assert (_norm(a.x_adv - x, "linf") <= _norm(b.x_adv - x, "linf") + 1e-6).all()


class _SeededNoise(DefendedModel):
    """A randomised model whose input noise depends only on the example's pixels and on the draw's number within
    each EOT expectation, so one example's draws do not depend on which others share its batch."""

    randomized = True

    def __init__(self, net: nn.Module, draws: int):
        super().__init__()
        self.net, self.draws, self.calls = net, draws, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draw, self.calls = self.calls % self.draws, self.calls + 1
        keys = (x.detach().flatten(1).sum(1) * 100).round().long().tolist()
        gen = torch.Generator()
        noise = torch.stack([torch.randn(x.shape[1:], generator=gen.manual_seed(k * 31 + draw)) for k in keys])
        return self.net((x + 0.05 * noise).clamp(0, 1))


def test_eot_early_stop_breaks_the_same_examples(standard_model, mnist_test_batch):
    """EOT-wrapped PGD decides each early exit on the mean logits of its draws, and stops the same examples."""
    x, y = mnist_test_batch[0][1::4], mnist_test_batch[1][1::4]
    seeds = torch.arange(len(x))
    model = _SeededNoise(standard_model, 4).eval()
    a, b = (EOT(PGD(eps=0.1, step=0.01, steps=15, early_stop=stop), n=4) for stop in (False, True))
    model.calls = 0
    full = a.run(model, x, y, seeds=seeds)
    model.calls = 0
    early = b.run(model, x, y, seeds=seeds)
    assert 0 < int(full.success.sum()) < len(x)
    assert torch.equal(full.success, early.success) and torch.equal(full.iterations, early.iterations)
