"""${mnist_cifar:a,b} picks each dataset family's published default budget."""
import pytest
from omegaconf import OmegaConf

from robustlab.cli import robustlab_cause
from tests.helpers import make_cfg

EIGHT_255 = 8 / 255


@pytest.mark.parametrize("data, model, eps, steps", [
    ("mnist5k", "mnist_cnn", 0.3, 40), ("digits", "mnist_cnn", 0.3, 40),
    ("cifar10", "resnet20", EIGHT_255, 20), ("svhn", "resnet18", EIGHT_255, 20),
])
def test_attack_budget_follows_the_data(tmp_path, data, model, eps, steps):
    cfg = make_cfg("train", tmp_path, [f"data={data}", f"model={model}", "attack=[fgsm,pgd_linf]"])
    attack = OmegaConf.to_container(cfg.attack, resolve=True)
    assert attack["pgd_linf"]["eps"] == pytest.approx(eps) and attack["pgd_linf"]["steps"] == steps
    assert attack["fgsm"]["eps"] == pytest.approx(eps)
    assert OmegaConf.to_container(cfg.defense, resolve=True)["attack"]["eps"] == pytest.approx(eps)


def test_unknown_data_family_asks_for_explicit_values(tmp_path):
    cfg = make_cfg("train", tmp_path, ["data._target_=torch.utils.data.Dataset"])
    with pytest.raises(Exception) as err:
        OmegaConf.to_container(cfg.attack, resolve=True)
    assert "set the attack's or defense's eps" in str(robustlab_cause(err.value))
