"""OmegaConf resolvers used by the configs: the data's threat budgets and its family's default settings.

Every data config states its ``threat`` budgets (eps per norm and the conventional step sizes) and its
``family``; attack and defense configs read them, so a new dataset is one data file:

* ``${budget:linf}``: the data's ``threat.linf`` (``${budget:linf,1.25}``: 1.25 times it);
* ``${mnist_cifar:a,b}``: ``a`` for MNIST-like data (grayscale digits), ``b`` for every other family (natural
  images: CIFAR-10, SVHN, ImageNet-size data, a user's folder) -- the papers' per-family settings that are not
  budgets (step counts, defense hyper-parameters).

Evaluation resolves them against the checkpoint's own data config.
"""

from typing import Any

from omegaconf import DictConfig, OmegaConf

from robustlab.errors import RobustlabError

FAMILIES = ("mnist", "cifar", "imagenet")
BUDGETS = ("linf", "l2", "l1", "linf_step", "l2_step", "l1_step", "deepsec_linf", "deepsec_linf_step")
#: A family's budgets, for data that states its family but not (all of) its ``threat`` (a folder, a tensor file):
#: those of configs/data/mnist.yaml and cifar10.yaml; ImageNet's Linf 4/255 (RobustBench) and L2 3.0 (Madry et
#: al.'s robustness library), with DEEPSEC's Linf family at the same 4/255.
FAMILY_BUDGETS = {
    "mnist": dict(
        linf=0.3, l2=2.0, l1=10.0, linf_step=0.01, l2_step=0.1, l1_step=1.0, deepsec_linf=0.3, deepsec_linf_step=0.05
    ),
    "cifar": dict(
        linf=8 / 255,
        l2=0.5,
        l1=12.0,
        linf_step=2 / 255,
        l2_step=0.05,
        l1_step=1.2,
        deepsec_linf=0.1,
        deepsec_linf_step=0.01,
    ),
    "imagenet": dict(
        linf=4 / 255, l2=3.0, linf_step=1 / 255, l2_step=0.3, deepsec_linf=4 / 255, deepsec_linf_step=1 / 255
    ),
}


def _data(root: DictConfig) -> tuple[Any, str]:
    data = root.get("data") or {}
    return data, str(data.get("_target_", "?")).rsplit(".", 1)[-1]


def budget(key: str, factor: float = 1.0, *, _root_: DictConfig) -> float:
    """``${budget:key[,factor]}``: ``factor`` times the data config's ``threat.<key>`` (when the data states
    none, its family's: :data:`FAMILY_BUDGETS`)."""
    data, name = _data(_root_)
    value = (data.get("threat") or {}).get(key)
    if value is None:
        value = FAMILY_BUDGETS.get(data.get("family"), {}).get(key)
    if value is None:
        raise RobustlabError(
            f"data {name} states no {key} budget",
            f"set data.threat.{key}=<value> (a data config lists its budgets under threat: "
            f"{', '.join(BUDGETS)}), or data.family=<{'|'.join(FAMILIES)}> for its family's, or the attack's own "
            "eps and step on the command line",
        )
    return float(value) * factor if factor != 1.0 else value


def mnist_cifar(mnist_value: Any, cifar_value: Any, *, _root_: DictConfig) -> Any:
    """``${mnist_cifar:a,b}``: ``a`` when the run's data family is ``mnist``, ``b`` for any other family."""
    data, name = _data(_root_)
    family = data.get("family")
    if family is None:
        raise RobustlabError(
            f"data {name} states no family for the papers' default settings",
            f"set data.family=<{'|'.join(FAMILIES)}>, or the attack's or defense's settings "
            "explicitly on the command line",
        )
    return mnist_value if family == "mnist" else cifar_value


OmegaConf.register_new_resolver("budget", budget, replace=True)
OmegaConf.register_new_resolver("mnist_cifar", mnist_cifar, replace=True)
