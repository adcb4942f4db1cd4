"""OptMargin has no peer: its examples must stay misclassified under the noise directions it
used, where CW2's minimal examples do not, at the price of a larger perturbation."""

import pytest
import torch

from robustlab import RobustlabError
from robustlab.attacks import CW2, OptMargin
from tests.attacks.helpers import norms


def _share_misclassified_under_noise(model, x_adv, y, noise):
    with torch.no_grad():
        pred = model((x_adv[:, None] + noise).clamp(0, 1).flatten(0, 1)).argmax(1).view(len(x_adv), -1)
    return (pred != y[:, None]).float().mean(1)


def test_optmargin_examples_survive_their_noise_and_cw2_ones_do_not(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][4::33], mnist_test_batch[1][4::33]
    seeds = torch.arange(len(x))
    attack = OptMargin(steps=50, binary_steps=2, c0=1.0)
    x_om = attack(standard_model, x, y, seeds=seeds)
    noise = attack.noise_directions(x, seeds)
    assert noise.shape == (len(x), 20, *x.shape[1:])
    assert (noise[:, 0] == 0).all()
    unit = noise[:, 1:].flatten(2)
    assert torch.allclose(unit.abs().amax(2), torch.full(unit.shape[:2], 0.3))
    gram = unit @ unit.transpose(1, 2)
    assert torch.allclose(gram - torch.diag_embed(gram.diagonal(dim1=1, dim2=2)), torch.zeros_like(gram), atol=1e-4)
    robust = attack.last_robust
    assert robust.float().mean() >= 0.75
    assert (_share_misclassified_under_noise(standard_model, x_om, y, noise)[robust] == 1).all()
    cw2 = CW2(steps=300, binary_steps=4, c0=0.1, lr=0.05, targeted=False)
    x_cw = cw2(standard_model, x, y)
    both = robust & cw2.last_success
    share_cw = _share_misclassified_under_noise(standard_model, x_cw, y, noise)[both]
    l2_om, l2_cw = norms(x_om - x, 2)[both], norms(x_cw - x, 2)[both]
    print(
        f"misclassified under the noise: OptMargin 1.00, CW2 {share_cw.mean():.2f}; "
        f"median L2 OptMargin {l2_om.median():.2f}, CW2 {l2_cw.median():.2f}"
    )
    assert both.sum() >= 4 and share_cw.mean() < 0.8 and l2_om.median() > l2_cw.median()


def test_optmargin_per_example_constants_and_seeded_noise(standard_model, mnist_test_batch):
    x, y = mnist_test_batch[0][9::40], mnist_test_batch[1][9::40]
    seeds = torch.arange(50, 50 + len(x))
    attack = OptMargin(steps=20, binary_steps=2, directions=5)
    whole = attack(standard_model, x, y, seeds=seeds)
    success, robust = attack.last_success, attack.last_robust
    assert torch.equal(attack.noise_directions(x[2:], seeds[2:]), attack.noise_directions(x, seeds)[2:])
    part = attack(standard_model, x[2:], y[2:], seeds=seeds[2:])
    assert torch.allclose(part, whole[2:], atol=1e-5)
    assert torch.equal(attack.last_success, success[2:]) and torch.equal(attack.last_robust, robust[2:])
    assert torch.equal(whole[~success], x[~success]) and (robust <= success).all()


@pytest.mark.parametrize("kwargs", [{"directions": 0}, {"noise": -0.1}, {"c0": -1.0}, {"lr": float("nan")}])
def test_optmargin_bad_parameters_are_one_line_errors(kwargs):
    with pytest.raises(RobustlabError) as err:
        OptMargin(**kwargs)
    assert "fix:" in str(err.value) and "\n" not in str(err.value)


def test_optmargin_too_many_directions_is_refused(standard_model, mnist_test_batch):
    with pytest.raises(RobustlabError, match="orthogonal directions"):
        OptMargin(directions=800, steps=1, binary_steps=1)(standard_model, *(t[:2] for t in mnist_test_batch))
