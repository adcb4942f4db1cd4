"""corrupt(): input checks, seeding, batch independence, grayscale, perturbation sequences."""

import pytest
import torch

from robustlab import RobustlabError
from robustlab.corruptions import BENCHMARK, CORRUPTIONS, HELD_OUT, PERTURBATIONS, corrupt, perturbation_sequence
from robustlab.rng import Streams


def _x(b=4, c=3, size=32, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_names():
    assert len(BENCHMARK) == 15 and len(HELD_OUT) == 4 and CORRUPTIONS == BENCHMARK + HELD_OUT


@pytest.mark.parametrize(
    "args, match",
    [
        (("fish", 1), "unknown corruption"),
        (("fog", 0), "severity"),
        (("fog", 6), "severity"),
        (("fog", 2.5), "severity"),
    ],
)
def test_bad_name_or_severity(args, match):
    with pytest.raises(RobustlabError, match=match):
        corrupt(_x(), *args)


@pytest.mark.parametrize(
    "x, match",
    [
        (_x() * 2, r"outside \[0,1\]"),
        (_x().masked_fill(_x() > 0.9, float("nan")), "NaN"),
        (_x(size=28)[..., :28], "32x32"),
        (torch.rand(3, 32, 32), "B, C, H, W"),
    ],
)
def test_bad_images(x, match):
    with pytest.raises(RobustlabError, match=match):
        corrupt(x, "fog", 1)
    assert "fix:" in str(pytest.raises(RobustlabError, corrupt, x, "fog", 1).value)


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_every_corruption_seeded_shape_range_and_grayscale(params):
    x, g = _x(), _x(c=1, size=40)
    for name in CORRUPTIONS:
        a = corrupt(x, name, 3, torch.Generator().manual_seed(1), params=params)
        b = corrupt(x, name, 3, torch.Generator().manual_seed(1), params=params)
        assert torch.equal(a, b), name
        assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1
        assert not torch.equal(a, x), name
        y = corrupt(g, name, 3, torch.Generator().manual_seed(1), params=params)
        assert y.shape == g.shape and torch.isfinite(y).all(), name


def test_per_sample_streams_make_samples_independent_of_the_batch():
    x = _x(b=6)
    for name in ("gaussian_noise", "shot_noise", "glass_blur", "snow", "frost", "fog", "elastic_transform", "spatter"):
        full = corrupt(x, name, 4, Streams(torch.arange(6)))
        part = corrupt(x[2:5], name, 4, Streams(torch.arange(2, 5)))
        assert torch.allclose(full[2:5], part, atol=1e-6), name
        assert not torch.equal(full, corrupt(x, name, 4, Streams(torch.arange(6), salt=1))), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu_for_deterministic_corruptions():
    x = _x()
    for name in ("defocus_blur", "zoom_blur", "pixelate", "brightness", "contrast", "saturate"):
        assert torch.allclose(corrupt(x.cuda(), name, 3).cpu(), corrupt(x, name, 3), atol=1e-5), name


def test_reference_frost_textures_when_installed():
    pytest.importorskip("imagecorruptions")
    y = corrupt(_x(), "frost", 2, torch.Generator().manual_seed(0), frost_textures="reference")
    assert y.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbation_sequences(name):
    x = torch.nn.functional.interpolate(_x(b=3, c=1, size=8), size=32, mode="bilinear")
    seq = perturbation_sequence(x, name, length=6, generator=torch.Generator().manual_seed(0))
    assert seq.shape == (3, 6, 1, 32, 32) and 0 <= seq.min() and seq.max() <= 1
    again = perturbation_sequence(x, name, length=6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seq, again)
    if PERTURBATIONS[name] == "consecutive":
        assert torch.allclose(seq[:, 0], x, atol=1e-5)
        steps = (seq[:, 1:] - seq[:, :-1]).abs().mean((0, 2, 3, 4))
        assert (steps > 0).all() and (steps < 0.2).all()
    with pytest.raises(RobustlabError, match="unknown perturbation"):
        perturbation_sequence(x, "wobble")
