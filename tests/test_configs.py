"""Every attack and defense config composes and instantiates for MNIST-like and CIFAR-like data."""

import pytest
from hydra.utils import instantiate

from robustlab.attacks import Attack
from robustlab.defenses import RobustClassifier
from tests.helpers import CONFIG_DIR, make_cfg

ATTACKS = sorted(p.stem for p in (CONFIG_DIR / "attack").glob("*.yaml"))
DEFENSES = sorted(p.stem for p in (CONFIG_DIR / "defense").glob("*.yaml"))
DATA = [("mnist5k", "mnist_cnn"), ("cifar10", "resnet20")]


@pytest.mark.parametrize("data, model", DATA)
@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_config_instantiates(tmp_path, attack, data, model):
    cfg = make_cfg("train", tmp_path, [f"data={data}", f"model={model}", f"attack=[{attack}]"])
    (node,) = cfg.attack.values()
    assert isinstance(instantiate(node), Attack)


@pytest.mark.parametrize("data, model", DATA)
@pytest.mark.parametrize("defense", DEFENSES)
def test_defense_config_instantiates(tmp_path, defense, data, model):
    cfg = make_cfg("train", tmp_path, [f"data={data}", f"model={model}", f"defense={defense}"])
    assert isinstance(instantiate(cfg.defense, net=instantiate(cfg.model)), RobustClassifier)
