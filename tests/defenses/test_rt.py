"""RT: the transform outputs exactly ``final`` px with the resized image placed inside; the defense
trains, reloads as the randomized wrapper and evaluates."""

import pytest
import torch
import torch.nn.functional as F

from robustlab import RobustlabError
from robustlab.defenses.rt import RandomResizePad
from robustlab.defenses.transforms import resize_pad
from robustlab.models.base import preprocessors, randomized
from tests.defenses.helpers import train_reload_evaluate

PAD = 2.0  # outside [0,1]: marks the padding


def test_output_is_final_px_with_the_resized_image_inside():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = resize_pad(x, final=12, pad_value=PAD)
    assert out.shape == (64, 3, 12, 12)
    sides, offsets = set(), set()
    for img, o in zip(x, out):
        inside = (o[0] != PAD).nonzero()
        (top, left), (bottom, right) = inside.min(0).values.tolist(), inside.max(0).values.tolist()
        side = bottom - top + 1
        assert right - left + 1 == side and 8 <= side < 12, "a square of side in [size, final)"
        assert top < 12 - side and left < 12 - side, "offsets in [0, final - side)"
        expected = F.interpolate(img[None], size=(side, side), mode="nearest")[0]
        assert torch.equal(o[:, top : top + side, left : left + side], expected)
        assert int((o != PAD).sum()) == 3 * side * side, "everything else is padding"
        sides.add(side)
        offsets.add((top, left))
    assert sides == {8, 9, 10, 11} and len(offsets) > 5, "sizes and offsets are random"


def test_wrapper_is_random_differentiable_and_checks_the_size():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(31 * 31, 10))
    wrapper = RandomResizePad(net, final=31)
    assert randomized(wrapper) and preprocessors(wrapper) == []
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    torch.manual_seed(1)
    a = wrapper(x)
    torch.manual_seed(2)
    assert not torch.equal(a, wrapper(x))
    (grad,) = torch.autograd.grad(a.sum(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(RobustlabError, match="already 31 px"):
        wrapper(torch.rand(1, 1, 31, 31))


def test_rt_trains_reloads_as_the_wrapper_and_evaluates(tmp_path, mnist_test_batch):
    _, model = train_reload_evaluate(tmp_path, "rt", ["defense.train_transformed=true"], *mnist_test_batch)
    assert isinstance(model, RandomResizePad) and model.final == 31 and model.randomized
