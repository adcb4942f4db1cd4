"""Neuron coverage: hand-computed KMN/NB/SNA/TKN on a 2-layer toy network, the profiler, hooks,
memory and one-vs-two-process equality."""

import inspect
from functools import partial

import pytest
import torch
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.metrics import KMNCov, NBCov, NeuronProfile, NeuronRange, SNACov, TKNCov, profile_neurons
from robustlab.metrics.coverage import layer_outputs, neuron_values, profile_path, select_layers, weights_fingerprint
from tests.metrics.distributed import assert_same_on_two_processes

# Training inputs of the toy network and the test inputs whose coverage is worked out below.
TRAIN = torch.tensor([[0.0, 0.0], [4.0, 2.0], [2.0, 4.0]])
TEST = torch.tensor([[0.5, 3.5], [5.0, 0.5], [1.0, 1.0], [3.5, 0.2]])


def toy() -> nn.Sequential:
    """h = x (layer "0"); o = (relu(h1) + relu(h2), relu(h1) - relu(h2)) (layer "2")."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        net[2].bias.zero_()
    return net.eval()


def _toy_profile() -> NeuronProfile:
    net = toy()
    return profile_neurons(net, [TRAIN[:1], TRAIN[1:]], select_layers(net))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_toy_profile_by_hand():
    # Neurons h1, h2 (layer 0) and o1, o2 (layer 2) on TRAIN: h1, h2 in [0, 4], o1 in [0, 6], o2 in [-2, 2].
    profile = _toy_profile()
    assert profile.layers == {"0": 2, "2": 2} and profile.n_samples == 3
    assert profile.low.tolist() == [0, 0, 0, -2] and profile.high.tolist() == [4, 4, 6, 2]


def test_toy_coverage_by_hand():
    """k = 4 sections: h1, h2 of width 1, o1 of width 1.5 from 0, o2 of width 1 from -2.

    input       h1, h2      sections (h1, h2)   o1, o2      sections (o1, o2)
    (0.5, 3.5)  0.5, 3.5    0, 3                4, -3       2, lower corner
    (5, 0.5)    5, 0.5      upper corner, 0     5.5, 4.5    3, upper corner
    (1, 1)      1, 1        1, 1                2, 0        1, 2
    (3.5, 0.2)  3.5, 0.2    3, 0                3.7, 3.3    2, upper corner

    Sections hit: h1 {0,1,3}, h2 {0,1,3}, o1 {1,2,3}, o2 {2}: KMNCov = 10/16. Upper corners h1, o2; lower
    corner o2: NBCov = 3/8, SNACov = 2/4. Top-1 per layer: h2, h1 (layer 0) and o1 only (layer 2): 3/4.
    """
    net, profile = toy(), _toy_profile()
    outputs = layer_outputs(net, TEST, select_layers(net))
    metrics = {
        "kmn": KMNCov(profile, k=4),
        "nb": NBCov(profile),
        "sna": SNACov(profile),
        "tkn1": TKNCov(profile, k=1),
        "tkn2": TKNCov(profile.layers, k=2),
    }
    for m in metrics.values():
        m.update(outputs)
    got = {name: m.compute().item() for name, m in metrics.items()}
    assert got == {"kmn": 10 / 16, "nb": 3 / 8, "sna": 2 / 4, "tkn1": 3 / 4, "tkn2": 1.0}
    assert metrics["kmn"].covered.tolist() == [[1, 1, 0, 1], [1, 1, 0, 1], [0, 1, 1, 1], [0, 0, 1, 0]]
    assert metrics["nb"].upper.tolist() == [1, 0, 0, 1] and metrics["nb"].lower.tolist() == [0, 0, 0, 1]


def test_streaming_equals_one_batch():
    net, profile = toy(), _toy_profile()
    layers = select_layers(net)
    one, many = KMNCov(profile, k=4), KMNCov(profile, k=4)
    one.update(layer_outputs(net, TEST, layers))
    for i in range(len(TEST)):
        many.update(layer_outputs(net, TEST[i : i + 1], layers, reduce=neuron_values))
    assert torch.equal(one.covered, many.covered)


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Sequential(inner, nn.Conv2d(8, 4, 3)), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    ).eval()


def test_layers_by_type_and_name_include_nested_modules():
    net = _conv_net()
    assert list(select_layers(net)) == ["0.0.0", "0.1", "3"]
    assert list(select_layers(net, types=["BatchNorm2d"], names=["3"])) == ["0.0.1", "3"]
    assert list(select_layers(net, types=[nn.ReLU])) == ["0.0.2"]
    with pytest.raises(RobustlabError, match="no layer named 'nope'"):
        select_layers(net, names=["nope"])
    with pytest.raises(RobustlabError, match="no layer of Sequential matches"):
        select_layers(net, types=["LSTM"])


def test_conv_neuron_is_a_channel_and_inplace_ops_do_not_leak():
    net = _conv_net()
    x = torch.rand(6, 3, 12, 12)
    layers = select_layers(net, types=["BatchNorm2d"])
    # The BatchNorm output is overwritten by the in-place ReLU after it: the hook must keep a copy.
    bn = layer_outputs(net, x, layers)["0.0.1"]
    with torch.no_grad():
        expected = net[0][0][1](net[0][0][0](x))
    torch.testing.assert_close(bn, expected)
    assert (bn < 0).any()
    torch.testing.assert_close(neuron_values(bn), expected.mean((2, 3)))


def test_profiler_is_min_max_over_the_dataset_for_any_batch_size():
    net = _conv_net()
    data = torch.rand(37, 3, 12, 12)
    layers = select_layers(net)
    full = layer_outputs(net, data, layers, reduce=neuron_values)
    low = torch.cat([v.amin(0) for v in full.values()])
    high = torch.cat([v.amax(0) for v in full.values()])
    for batch_size in (1, 5, 37):
        batches = [
            (data[i : i + batch_size], torch.zeros(len(data[i : i + batch_size]))) for i in range(0, 37, batch_size)
        ]
        profile = profile_neurons(net, batches, layers)
        assert profile.n_samples == 37 and profile.layers == {"0.0.0": 8, "0.1": 4, "3": 5}
        torch.testing.assert_close(profile.low, low, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(profile.high, high, rtol=1e-5, atol=1e-6)
    assert _hooks(net) == 0
    assert profile.fingerprint == weights_fingerprint(net)


def test_hooks_removed_after_use_and_after_errors():
    net = _conv_net()
    layers = select_layers(net)
    layer_outputs(net, torch.rand(2, 3, 12, 12), layers)
    assert _hooks(net) == 0
    with pytest.raises(RuntimeError):
        layer_outputs(net, torch.rand(2, 5, 12, 12), layers)  # wrong channel count fails inside forward
    assert _hooks(net) == 0
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Linear(3, 3), shared, nn.Linear(3, 3), shared)
    # A layer called twice per forward (a vote over copies, a shared module) gives both calls' outputs.
    assert layer_outputs(twice, torch.rand(2, 3), select_layers(twice, types=["ReLU"]))["1"].shape == (4, 3)
    mismatched = nn.Sequential(nn.Linear(3, 3), shared, nn.Linear(3, 5), shared)
    with pytest.raises(RobustlabError, match="ran several times"):
        layer_outputs(mismatched, torch.rand(2, 3), select_layers(mismatched, types=["ReLU"]))
    assert _hooks(twice) == 0 and _hooks(mismatched) == 0


def test_state_size_does_not_grow_with_samples():
    net = _conv_net()
    layers = select_layers(net)
    profile = profile_neurons(net, [torch.rand(4, 3, 12, 12)], layers)
    metrics = [KMNCov(profile, k=7), NBCov(profile), SNACov(profile), TKNCov(profile), NeuronRange(profile.layers)]
    sizes = []
    for updates in (1, 6):
        for m in metrics:
            m.reset()
        for _ in range(updates):
            outputs = layer_outputs(net, torch.rand(8, 3, 12, 12), layers)
            for m in metrics:
                m.update(outputs)
        sizes.append([{k: v.shape for k, v in m.metric_state.items()} for m in metrics])
    assert sizes[0] == sizes[1]
    assert sizes[0][0]["covered"] == (17, 7)


def test_profile_round_trip_is_weights_only(tmp_path):
    profile = _toy_profile()
    path = profile_path(tmp_path / "last.ckpt")
    assert path.name == "last.coverage.pt"
    profile.save(path)
    torch.load(path, weights_only=True)
    back = NeuronProfile.load(path)
    assert back.layers == profile.layers and back.fingerprint == profile.fingerprint
    assert torch.equal(back.low, profile.low) and torch.equal(back.high, profile.high)
    assert back.restrict(["2"]).low.tolist() == [0, -2]
    (tmp_path / "bad.pt").write_text("not a profile")
    with pytest.raises(RobustlabError, match="not a readable neuron profile"):
        NeuronProfile.load(tmp_path / "bad.pt")


def test_wrong_layers_are_refused():
    profile = _toy_profile()
    with pytest.raises(RobustlabError, match="the metric measures"):
        KMNCov(profile).update({"0": torch.zeros(1, 2)})
    with pytest.raises(RobustlabError, match="has 3 neurons but the profile has 2"):
        NBCov(profile).update({"0": torch.zeros(1, 3), "2": torch.zeros(1, 2)})
    with pytest.raises(RobustlabError, match="k must be an integer"):
        KMNCov(profile, k=0)


class MetricGroup:
    """Several metrics fed from one kwargs dict (each gets the arguments its ``update`` names), computed
    into ``{name: result}``: one two-process run checks them all."""

    def __init__(self, **metrics):
        self.metrics = metrics

    def update(self, **kwargs):
        for m in self.metrics.values():
            names = inspect.signature(m.update).parameters
            m.update(**{k: v for k, v in kwargs.items() if k in names})

    def compute(self):
        return {name: m.compute() for name, m in self.metrics.items()}


def _coverage_group() -> MetricGroup:
    profile = _toy_profile()
    return MetricGroup(
        KMNCov=KMNCov(profile, k=4),
        NBCov=NBCov(profile),
        SNACov=SNACov(profile),
        TKNCov=TKNCov(profile, k=1),
        NeuronRange=NeuronRange(profile.layers),
    )


@pytest.mark.parametrize("group", ["coverage"])
def test_same_on_one_or_two_processes(group):
    g = torch.Generator().manual_seed(0)
    net = toy()
    layers = select_layers(net)
    batches = [{"outputs": layer_outputs(net, 6 * torch.rand(n, 2, generator=g) - 1, layers)} for n in (3, 1, 4)]
    single = assert_same_on_two_processes(partial(_coverage_group), batches)
    assert 0 < single["KMNCov"] <= 1 and single["NeuronRange"]["n_samples"] == 8
