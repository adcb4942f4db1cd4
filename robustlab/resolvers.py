"""OmegaConf resolvers used by the configs."""
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from robustlab.errors import RobustlabError


def mnist_cifar(mnist_value: Any, cifar_value: Any, *, _root_: DictConfig) -> Any:
    """``${mnist_cifar:a,b}``: ``a`` when the run's data is MNIST-like (grayscale digits: mnist5k,
    mnist, digits), ``b`` when it is CIFAR-like (colour 32 px: cifar10, svhn). Lets one attack or
    defense config carry both papers' defaults; evaluation resolves it against the checkpoint's data."""
    target = _root_.get("data", {}).get("_target_")
    family = getattr(get_class(target), "threat_family", None) if target else None
    if family not in ("mnist", "cifar"):
        raise RobustlabError(f"no MNIST/CIFAR default for data {target!r}",
                             "set the attack's or defense's eps and step explicitly on the command line")
    return mnist_value if family == "mnist" else cifar_value


OmegaConf.register_new_resolver("mnist_cifar", mnist_cifar, replace=True)
