"""TE: the encoding inverts to the quantised input, LS-PGA yields valid codes within eps, BPDA has
gradients, and a checkpoint reloads as the encoded classifier and evaluates."""

import pytest
import torch
import torch.nn.functional as F

import robustlab
from robustlab.defenses.te import (
    LSPGA,
    ThermometerClassifier,
    bucket,
    decode,
    encode,
    quantise,
    soft_encode,
    thermometer_from_probs,
)
from robustlab.evaluate import evaluate
from robustlab.models import MNISTCNN, ResNet20
from robustlab.models.base import preprocessors
from robustlab.train import train
from tests.helpers import make_cfg


def _images():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    x[0, 0, 0, :6] = torch.tensor([0.0, 1.0, 1 / 16, 15 / 16, 0.5, 1 / 16 - 1e-6])  # edges and their neighbours
    return x


@pytest.mark.parametrize("levels", [16, 10])
def test_encoding_inverts_to_the_quantised_input(levels):
    x = _images()
    code = encode(x, levels)
    assert code.shape == (6, 3 * levels, 8, 8)
    assert torch.equal(decode(code, levels), quantise(x, levels))
    # By hand: bucket k = floor(levels * x) (top value in the last bucket), code bit i = [k >= i].
    k = (x * levels).floor().clamp(max=levels - 1)
    assert torch.equal(quantise(x, levels), k / (levels - 1))
    bits = code.view(6, 3, levels, 8, 8)
    assert torch.equal(bits, (k[:, :, None] >= torch.arange(levels).view(1, 1, -1, 1, 1)).float())
    assert torch.equal(encode(quantise(x, levels), levels), code), "quantising first changes nothing"
    edges = torch.arange(levels) / levels
    assert torch.equal(soft_encode(edges.view(1, 1, 1, -1), levels), encode(edges.view(1, 1, 1, -1), levels))


def test_wrapper_is_classifier_of_preprocess_with_bpda_gradients():
    torch.manual_seed(0)
    model = ThermometerClassifier(MNISTCNN(), levels=16).eval()
    assert model.encoded.in_channels == 16 and model.encoded.net[0].in_channels == 16
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), model.classifier(model.preprocess(x)))
        assert torch.equal(model(x), model.encoded(encode(x, 16)))
    x.requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x).sum(), x)
    bpda = model.classifier(x + (quantise(x, 16) - x).detach())
    (grad,) = torch.autograd.grad(bpda.sum(), x)
    assert grad.abs().max() > 0 and torch.equal(plain, grad), "plain gradients are BPDA's, never masked"
    assert ThermometerClassifier(ResNet20(), levels=4).encoded.net[0].in_channels == 12


def test_lspga_relaxed_codes_are_thermometers_and_examples_stay_in_the_ball():
    torch.manual_seed(0)
    model = ThermometerClassifier(MNISTCNN(), levels=16).eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    attack = LSPGA(eps=0.1, steps=3)
    mask = attack.reachable(x, 16)
    relaxed = attack.relaxed(torch.randn(*mask.shape), mask, 1.0).view(8, 1, 16, 28, 28)
    assert relaxed.min() >= 0 and relaxed.max() <= 1 + 1e-6
    assert (relaxed[:, :, 0] - 1).abs().max() < 1e-6 and (relaxed.diff(dim=2) <= 1e-6).all(), "monotone thermometer"
    assert torch.equal(thermometer_from_probs(F.one_hot(torch.tensor([2]), 4).float()), torch.tensor([[1.0, 1, 1, 0]]))
    x_adv = attack(model, x, y, seeds=torch.arange(8))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert mask.gather(-1, bucket(x_adv, 16)[..., None]).all(), "every pixel lands in a reachable bucket"
    assert torch.equal(x_adv, attack(model, x, y, seeds=torch.arange(8))), "seeded per example"
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_te_trains_reloads_and_evaluates(tmp_path):
    summary = train(
        make_cfg(
            "train",
            tmp_path / "train",
            [
                "data=digits",
                "data.train_size=600",
                "trainer.max_epochs=1",
                "optimizer.lr=0.003",
                "logger=none",
                "attack=[]",
                "test=false",
                "defense=te",
                "defense.attack.steps=1",
            ],
        )
    )
    model = robustlab.load_model(summary["checkpoint"])
    assert (
        isinstance(model, ThermometerClassifier) and model.levels == 16 and preprocessors(model) == [model.preprocess]
    )
    report = evaluate(
        make_cfg(
            "eval", tmp_path / "eval", [f"ckpt={summary['checkpoint']}", "logger=none", "attack=[]", "progress=false"]
        )
    )
    assert report["defense_name"] == "te" and report["clean"]["CA"] > 0.3
