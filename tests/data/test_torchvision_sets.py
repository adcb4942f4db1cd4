"""Torchvision datasets are never downloaded unless asked, and say how to get them."""

import pytest

from robustlab import RobustlabError
from robustlab.data import CIFAR10, MNIST, SVHN


@pytest.mark.parametrize("cls", [MNIST, CIFAR10, SVHN])
def test_missing_dataset_gives_one_line_fix(cls, tmp_path):
    with pytest.raises(RobustlabError, match="download=true") as err:
        cls(root=str(tmp_path)).setup("fit")
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir()), "nothing may be downloaded without download=true"
