"""Every model takes [0,1] images with normalisation inside, and the registry refuses mismatches."""

import pytest
import torch

from robustlab import RobustlabError
from robustlab.data import CIFAR10, MNIST5k
from robustlab.models import MNISTCNN, VGG16, Normalize, ResNet18, ResNet20, WideResNet
from robustlab.tasks import check_compatible


@pytest.mark.parametrize(
    "make, shape, params",
    [
        (MNISTCNN, (2, 1, 28, 28), 312_202),
        (ResNet20, (2, 3, 32, 32), 272_474),
        (ResNet18, (2, 3, 32, 32), 11_173_962),
        (VGG16, (2, 3, 32, 32), 14_728_266),
        (lambda: WideResNet(depth=28, width=10), (2, 3, 32, 32), 36_479_194),
    ],
)
def test_models_take_unit_images(make, shape, params):
    model = make().eval()
    assert isinstance(model.normalize, Normalize)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.rand(shape)).shape == (2, 10)


def test_normalisation_is_inside_the_model():
    model = MNISTCNN(mean=(0.5,), std=(0.25,)).eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(model(x), model.net((x - 0.5) / 0.25))


def test_mismatched_model_and_data_fail_at_start():
    with pytest.raises(RobustlabError, match="model MNISTCNN expects 1x28x28.*cifar10 has 3x32x32") as err:
        check_compatible(MNISTCNN(), CIFAR10())
    assert "fix: " in str(err.value) and "\n" not in str(err.value)
    check_compatible(MNISTCNN(), MNIST5k())
