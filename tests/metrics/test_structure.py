"""EBD, EBD-2, ENI, Neuron Sensitivity and Neuron Uncertainty against analytic values on tiny models
whose decision boundary or activations are known in closed form; one-vs-two-process equality."""

import math
from functools import partial

import pytest
import torch
from torch import nn

from robustlab.attacks import BIM, FGSM
from robustlab.errors import RobustlabError
from robustlab.metrics import EBD, EBD2, ENI, NeuronSensitivity, NeuronUncertainty
from robustlab.metrics.coverage import layer_outputs, select_layers
from robustlab.metrics.structure import orthogonal_directions
from tests.metrics.distributed import assert_same_on_two_processes
from tests.metrics.test_coverage import MetricGroup

SIDE = 4  # 1x4x4 inputs: d = 16


def linear_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor, float]:
    """Two classes with ``z1 - z0 = w.x + b``: the boundary is the hyperplane ``w.x + b = 0``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(SIDE * SIDE, generator=g)
    w = torch.where(w.abs() < 0.2, 0.2 * w.sign(), w)  # no zero entries: sign steps move every pixel
    b = -0.5 * w.sum().item()  # the boundary passes through the grey image
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros_like(w), w]))
        model[1].bias.copy_(torch.tensor([0.0, b]))
    return model.eval(), w, b


def _inputs(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.4 + 0.2 * torch.rand(n, 1, SIDE, SIDE, generator=g)


def test_orthogonal_directions_are_orthonormal_and_seeded_per_example():
    x = _inputs(3)
    v = orthogonal_directions(x, 5, torch.tensor([7, 8, 9]))
    torch.testing.assert_close(v @ v.transpose(1, 2), torch.eye(5).expand(3, 5, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(orthogonal_directions(x[1:2], 5, torch.tensor([8])), v[1:2])


def test_ebd_on_a_linear_classifier_is_the_analytic_distance_within_one_step():
    model, w, b = linear_model()
    x, seeds, step = _inputs(6), torch.arange(6), 0.01
    s = x.flatten(1) @ w + b
    v = orthogonal_directions(x, 4, seeds)
    crossing = s.abs()[:, None] / (v @ w).abs()  # |s| / |w.v|: where the line x + t v meets the boundary
    grid = (torch.floor(crossing / step) + 1) * step  # the first grid point past it
    expected = torch.where(grid <= 3.0, grid, float("inf")).amin(1)  # the best direction within max_distance
    assert torch.isfinite(expected).all()
    metric = EBD(directions=4, step=step, max_distance=3.0, measure="l2", clip=False)
    metric.update(model, x[:4], seeds[:4])
    metric.update(model, x[4:], seeds[4:])
    assert metric.censored.item() == 0
    assert metric.compute().item() == pytest.approx(expected.mean().item(), rel=1e-4)
    assert 0 < metric.compute().item() - crossing.amin(1).mean().item() <= step
    rms = EBD(directions=4, step=step, max_distance=3.0, measure="rms", clip=False)
    rms.update(model, x, seeds)
    assert rms.compute().item() == pytest.approx(metric.compute().item() / math.sqrt(SIDE * SIDE), rel=1e-6)


def test_ebd_does_not_depend_on_the_points_per_forward():
    model, _, _ = linear_model()
    x, seeds = _inputs(2), torch.tensor([4, 5])
    results = []
    for points in (5, 2048):  # 8 open directions: chunks of 5 of one step each, or all steps at once
        metric = EBD(directions=2, step=0.1, max_distance=3.0, measure="l2", points=points)
        metric.update(model, x, seeds)
        results.append(metric.compute().item())
    assert results[0] == results[1]


def test_ebd_counts_never_changing_examples_at_max_distance():
    model, _, _ = linear_model()
    x = _inputs(5)
    metric = EBD(directions=2, step=1e-4, max_distance=2e-4, measure="l2")
    metric.update(model, x, torch.arange(5))
    assert metric.censored.item() == 5 and metric.compute().item() == pytest.approx(2e-4)
    with pytest.raises(RobustlabError, match="unknown EBD measure"):
        EBD(measure="linf")


def test_ebd2_counts_bim_iterations_to_each_class_like_the_closed_form():
    """A targeted sign step of size a moves ``w.x + b`` by ``a ||w||_1`` towards the other class, so the
    prediction changes after ``floor(|s| / (a ||w||_1)) + 1`` iterations."""
    model, w, b = linear_model()
    x, step = _inputs(8), 0.004
    s = x.flatten(1) @ w + b
    ratio = s.abs() / (step * w.abs().sum())
    assert ((ratio - ratio.round()).abs() > 0.01).all(), "keep away from ties"
    expected = torch.floor(ratio) + 1
    y = (s > 0).long()
    y[0] = 1 - y[0]  # misclassified: aiming at its (wrong) prediction takes 0 iterations
    expected[0] = 0
    metric = EBD2(2, BIM(eps=1.0, step=step, steps=30))
    metric.update(model, x, y)
    result = metric.compute()
    assert result["EBD2"].item() == pytest.approx(expected.mean().item())
    assert result["nearest"].item() == pytest.approx(expected.mean().item())
    for j in (0, 1):
        assert result["per_class"][j].item() == pytest.approx(expected[y != j].mean().item())
    assert result["failure_rate"].item() == 0
    short = EBD2(2, BIM(eps=1.0, step=step, steps=3))
    short.update(model, x, y)
    capped = torch.where(expected <= 3, expected, 4.0)  # failures count as steps + 1
    assert short.compute()["EBD2"].item() == pytest.approx(capped.mean().item())
    assert short.compute()["failure_rate"].item() == pytest.approx((expected > 3).float().mean().item())
    with pytest.raises(RobustlabError, match="reports no iteration counts"):
        EBD2(2, FGSM(eps=0.1)).update(model, x, y)


def test_eni_by_hand_and_the_eps_constraint():
    model, w, b = linear_model()
    x = _inputs(1)
    delta = 0.05 * torch.sign(torch.randn(1, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(3)))
    y = torch.tensor([0])

    def ce0(img):  # cross-entropy of class 0 when z = (0, s): log(1 + e^s)
        return math.log1p(math.exp((img.flatten() @ w + b).item()))

    metric = ENI(eps=0.1)
    metric.update(model, x, y, noisy=x + delta)
    metric.update(model, x, y, noisy=x + 3 * delta)  # outside the eps-ball: skipped
    metric.update(model, x, y, noisy=x.clone())  # no perturbation: skipped
    assert metric.compute().item() == pytest.approx(abs(ce0(x) - ce0(x + delta)) / 0.05, rel=1e-5)
    assert metric.count.item() == 1 and metric.skipped.item() == 2


@pytest.mark.parametrize("noise", ["uniform", "gaussian", "sign"])
def test_eni_noise_is_in_the_ball_and_independent_of_batching(noise):
    model, _, _ = linear_model()
    x, seeds = _inputs(5), torch.arange(5) + 100
    y = torch.tensor([0, 1, 0, 1, 1])
    one, split = ENI(eps=0.05, samples=3, noise=noise), ENI(eps=0.05, samples=3, noise=noise)
    one.update(model, x, y, seeds)
    split.update(model, x[:2], y[:2], seeds[:2])
    split.update(model, x[2:], y[2:], seeds[2:])
    assert one.count.item() == 15 and one.skipped.item() == 0
    assert one.compute().item() == pytest.approx(split.compute().item(), rel=1e-9)
    noisy = one._pollute(x, seeds)
    assert (noisy - x.repeat_interleave(3, 0)).abs().max() <= 0.05 + 1e-6
    given = ENI(eps=0.05, samples=3, noise=noise)  # the clean logits passed in instead of recomputed
    with torch.no_grad():
        given.update(model, x, y, seeds, clean_logits=model(x))
    assert given.compute().item() == pytest.approx(one.compute().item(), rel=1e-9)


def conv_model() -> nn.Module:
    """Layer "0": channels ``x`` and ``-2x`` (1x1 conv); layer "2": ``(-sum(x), x[0, 0])``."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Flatten(), nn.Linear(8, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        model[2].weight.copy_(torch.stack([torch.ones(8), torch.eye(8)[0]]))
    return model.eval()


def test_neuron_sensitivity_and_uncertainty_by_hand():
    """Pair 1: x = [[0,1],[2,3]], x' = x + [[1,0],[0,-1]]; pair 2: x' = x.

    Sensitivity: channel 0 mean |diff| 0.5, channel 1 1.0 -> layer "0" 0.75 on pair 1; the linear outputs
    change by (0, 1) -> 0.5. Averaged with pair 2 (no change): 0.375 and 0.25.
    Uncertainty on x: channel variances 1.25 and 5 -> 3.125; the linear outputs (-6, 0) have variance 9.
    """
    model = conv_model()
    layers = select_layers(model)
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    adv = x.clone()
    adv[0] += torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    clean_out, adv_out = layer_outputs(model, x, layers), layer_outputs(model, adv, layers)
    sensitivity, uncertainty = NeuronSensitivity(list(layers)), NeuronUncertainty(list(layers))
    sensitivity.update(clean_out, adv_out)
    uncertainty.update(clean_out)
    assert {k: v.item() for k, v in sensitivity.compute().items()} == pytest.approx({"0": 0.375, "2": 0.25})
    assert {k: v.item() for k, v in uncertainty.compute().items()} == pytest.approx({"0": 3.125, "2": 9.0})
    with pytest.raises(RobustlabError, match="the metric measures"):
        uncertainty.update({"2": clean_out["2"]})


def test_state_size_does_not_grow_with_samples():
    model, _, _ = linear_model()
    metrics = [
        EBD(directions=2, step=0.5, max_distance=1.0),
        EBD2(2, BIM(eps=1.0, step=0.01, steps=1)),
        ENI(samples=2),
        NeuronSensitivity(["1"]),
        NeuronUncertainty(["1"]),
    ]
    sizes = []
    for updates in (1, 4):
        for m in metrics:
            m.reset()
        for _ in range(updates):
            x, y = _inputs(6), torch.zeros(6, dtype=torch.long)
            metrics[0].update(model, x)
            metrics[1].update(model, x, y)
            metrics[2].update(model, x, y)
            out = layer_outputs(model, x, select_layers(model))
            metrics[3].update(out, out)
            metrics[4].update(out)
        sizes.append([{k: v.shape for k, v in m.metric_state.items()} for m in metrics])
    assert sizes[0] == sizes[1]


def _group() -> MetricGroup:
    return MetricGroup(
        EBD=EBD(directions=3, step=0.02, max_distance=5.0),
        EBD2=EBD2(2, BIM(eps=1.0, step=0.005, steps=30)),
        ENI=ENI(eps=0.05, samples=2),
        NeuronSensitivity=NeuronSensitivity(["0", "2"]),
        NeuronUncertainty=NeuronUncertainty(["0", "2"]),
    )


def _batches() -> list[dict]:
    """Odd-sized batches for every structure metric: the linear model for EBD/EBD2/ENI, the conv model's
    layer outputs (clean and perturbed) for Neuron Sensitivity / Uncertainty."""
    g = torch.Generator().manual_seed(0)
    model, w, b = linear_model()
    x = _inputs(9)
    y = (x.flatten(1) @ w + b > 0).long()
    conv = conv_model()
    layers = select_layers(conv)
    batches = []
    for i, j in ((0, 4), (4, 5), (5, 9)):
        images = torch.rand(j - i, 1, 2, 2, generator=g)
        clean = layer_outputs(conv, images, layers)
        adv = layer_outputs(conv, images + 0.1 * torch.rand(images.shape, generator=g), layers)
        batches.append(
            {
                "model": model,
                "x": x[i:j],
                "y": y[i:j],
                "seeds": torch.arange(i, j),
                "clean": clean,
                "adversarial": adv,
                "outputs": clean,
            }
        )
    return batches


@pytest.mark.parametrize("group", ["structure"])
def test_same_on_one_or_two_processes(group):
    single = assert_same_on_two_processes(partial(_group), _batches())
    assert all(
        torch.isfinite(torch.as_tensor(v)).all()
        for r in single.values()
        for v in (r.values() if isinstance(r, dict) else [r])
    )
