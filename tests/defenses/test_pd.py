"""PixelDefend: the PixelCNN's masks make it autoregressive, its loss is the per-sub-pixel NLL,
purification picks the most probable level within eps, and a trained checkpoint reloads as the
purifying classifier that evaluation attacks with BPDA."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustlab
from robustlab import RobustlabError
from robustlab.defenses import PixelDefend
from robustlab.defenses.pd import PixelDefendClassifier, Purifier
from robustlab.evaluate import evaluate
from robustlab.models import MNISTCNN
from robustlab.models.base import preprocessors, randomized
from robustlab.models.pixelcnn import PixelCNN
from robustlab.train import train
from tests.helpers import make_cfg


@pytest.mark.parametrize("channels", [1, 3])
def test_logits_depend_only_on_earlier_sub_pixels(channels):
    torch.manual_seed(0)
    model = PixelCNN(channels, hidden=12, blocks=2).double()
    h = w = 6
    x = torch.rand(1, channels, h, w, dtype=torch.float64, requires_grad=True)
    logits = model(x)
    assert logits.shape == (1, 256, channels, h, w)
    order = torch.arange(h * w).view(1, h, w) * channels + torch.arange(channels).view(channels, 1, 1)
    proj = torch.randn(256, dtype=torch.float64)
    left, colour = [], []  # does the sub-pixel see its left neighbour / its pixel's previous colour?
    for i in range(h):
        for j in range(w):
            for c in range(channels):
                (grad,) = torch.autograd.grad((logits[0, :, c, i, j] * proj).sum(), x, retain_graph=True)
                later = order >= order[c, i, j]
                assert grad[0][later].abs().max() == 0, f"sub-pixel {(i, j, c)} sees itself or a later one"
                if j > 0:
                    left.append(bool(grad[0, :, i, j - 1].abs().sum() > 0))
                if c > 0:
                    colour.append(bool(grad[0, c - 1, i, j] != 0))
    # Dead ReLUs of a random net may cut a few paths; the masks let (almost) all through.
    assert sum(left) >= 0.9 * len(left) and (channels == 1 or sum(colour) >= 0.9 * len(colour))


def test_nll_is_the_cross_entropy_over_levels_in_bits():
    torch.manual_seed(0)
    model = PixelCNN(3, hidden=6, blocks=1).double()
    levels = torch.tensor([[[[0, 255], [17, 128]], [[3, 3], [200, 1]], [[255, 0], [64, 65]]]])
    x = levels.double() / 255
    logits = model(x)
    log_probs = logits.log_softmax(1)
    hand = -sum(log_probs[0, int(levels[0, c, i, j]), c, i, j] for c in range(3) for i in range(2) for j in range(2))
    expected = hand / 12 / math.log(2)
    assert model.nll(x).item() == pytest.approx(expected.item(), rel=1e-12)
    assert model.nll(x + 0.4 / 255).item() == pytest.approx(expected.item(), rel=1e-12), "8-bit quantised input"


class Favour(nn.Module):
    """A PixelCNN stand-in whose logits peak at level ``v`` (``-|level - v|``) everywhere."""

    reach = 0

    def __init__(self, v: int):
        super().__init__()
        self.v = v

    def forward(self, x):
        b, c, h, w = x.shape
        levels = torch.arange(256, dtype=x.dtype).view(1, 256, 1, 1, 1)
        return -(levels - self.v).abs().expand(b, 256, c, h, w)


def test_purification_moves_each_sub_pixel_to_the_in_window_level_nearest_the_favoured_one():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 5, 5)
    eps = 0.1  # floor(25.5) = 25 levels either side
    out = Purifier(Favour(128), eps)(x)
    q = (x * 255).round()
    nearest = torch.full_like(q, 128).clamp((q - 25).clamp_min(0), (q + 25).clamp_max(255))
    assert torch.equal((out * 255).round(), nearest) and (nearest != 128).any() and (nearest == 128).any()
    assert ((out - q / 255).abs() <= eps + 1e-6).all() and (out - x).abs().max() <= eps + 0.5 / 255 + 1e-6
    assert torch.equal(Purifier(Favour(0), 0.0)(x), q / 255), "eps_defend 0 returns the quantised input"
    edge = Purifier(Favour(255), 16 / 255)(torch.tensor([[[[250 / 255, 1.0]]]]))
    assert torch.allclose(edge * 255, torch.tensor([[[[255.0, 255.0]]]])), "clipped to 255"


def test_purification_is_deterministic_in_range_and_follows_the_pixelcnn():
    torch.manual_seed(0)
    model = PixelCNN(1, hidden=8, blocks=1)
    purifier = Purifier(model, 0.3)
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    out = purifier(x)
    assert not out.requires_grad and torch.equal(out, purifier(x))
    q = (x.detach() * 255).round() / 255
    assert ((out - q).abs() <= 0.3 + 1e-6).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out * 255, (out * 255).round()), "on the 8-bit grid"
    # Re-derive each greedy choice from the full PixelCNN on the purified image (the crop is exact).
    with torch.no_grad():
        logits = model(out)
    grid = torch.arange(256).view(1, 256, 1, 1, 1)
    window = (grid - (q * 255).round().long().unsqueeze(1)).abs() <= 76
    expected = logits.masked_fill(~window, float("-inf")).argmax(1)
    assert torch.equal((out * 255).round().long(), expected)
    assert not torch.equal(out, q), "the purifier moves something"


def test_wrapper_classifies_the_purified_image_with_a_straight_through_gradient():
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    wrapper = PixelDefendClassifier(net, eps_defend=0.2, in_channels=1, hidden=4, blocks=1)
    assert not randomized(wrapper) and preprocessors(wrapper) == [wrapper.preprocess] and wrapper.classifier is net
    assert isinstance(wrapper.preprocess, Purifier)
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    z = wrapper.preprocess(x)
    out = wrapper(x)
    assert torch.allclose(out, net(z), atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (straight,) = torch.autograd.grad(net(z.requires_grad_(True)).sum(), z)
    assert torch.allclose(grad, straight), "BPDA: the classifier's gradient at the purified image"


def test_bad_options_raise_and_the_pixelcnn_gets_its_own_learning_rate():
    with pytest.raises(RobustlabError, match="eps_defend in"):
        PixelDefend(MNISTCNN(), eps_defend=-0.1)
    with pytest.raises(RobustlabError, match="pixelcnn_lr > 0"):
        PixelDefend(MNISTCNN(), pixelcnn_lr=0)
    with pytest.raises(RobustlabError, match="hidden >= in_channels"):
        PixelCNN(3, hidden=2)
    module = PixelDefend(
        MNISTCNN(), hidden=4, blocks=1, pixelcnn_lr=0.01, optimizer=partial(torch.optim.Adam, lr=0.001)
    )
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [0.001, 0.01]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in module.pixelcnn.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in module.model.parameters()}
    module.eval()
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    expected = F.cross_entropy(module.model(x), y) + module.pixelcnn.nll(x)
    assert module.training_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_pd_trains_reloads_as_the_purifier_and_evaluates_with_bpda(tmp_path):
    summary = train(
        make_cfg(
            "train",
            tmp_path / "train",
            [
                "defense=pd",
                "defense.hidden=8",
                "defense.blocks=1",
                "data.train_size=200",
                "data.val_size=50",
                "trainer.max_epochs=1",
                "logger=none",
                "attack=[]",
                "test=false",
            ],
        )
    )
    assert summary["metrics"]["train/bpd"] < 8 and "val/bpd" in summary["metrics"]
    model = robustlab.load_model(summary["checkpoint"])
    assert isinstance(model, PixelDefendClassifier) and isinstance(model.preprocess, Purifier)
    assert model.preprocess.eps_defend == 0.3 and model.pixelcnn.reach == 4
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(model.preprocess(x)))
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path / "eval",
            [f"ckpt={summary['checkpoint']}", "logger=none", "data.test_size=4", "attack=[fgsm]", "progress=false"],
        )
    )
    assert report["defense_name"] == "pd" and report["clean"]["n_samples"] == 4
    assert report["adaptive"]["fgsm"].startswith("BPDA(") and "EOT" not in report["adaptive"]["fgsm"]
