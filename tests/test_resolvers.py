"""Threat budgets per dataset: every attack and defense reads them from the data config (``${budget:...}``),
other per-family settings come from ``${mnist_cifar:a,b}``, and a data source of no known family gets a
one-line error naming the key to set."""

import pytest
import torch
from omegaconf import OmegaConf

from robustlab.cli import robustlab_cause
from tests.helpers import CONFIG_DIR, make_cfg

EIGHT_255 = 8 / 255
ALL_ATTACKS = sorted(p.stem for p in (CONFIG_DIR / "attack").glob("*.yaml"))
ALL_DEFENSES = sorted(p.stem for p in (CONFIG_DIR / "defense").glob("*.yaml"))


@pytest.mark.parametrize(
    "data, model, eps, steps",
    [
        ("mnist5k", "mnist_cnn", 0.3, 40),
        ("digits", "mnist_cnn", 0.3, 40),
        ("cifar10", "resnet20", EIGHT_255, 20),
        ("svhn", "resnet18", EIGHT_255, 20),
    ],
)
def test_attack_budget_follows_the_data(tmp_path, data, model, eps, steps):
    cfg = make_cfg("train", tmp_path, [f"data={data}", f"model={model}", "attack=[fgsm,pgd_linf,pgd_l2,bim]"])
    attack = OmegaConf.to_container(cfg.attack, resolve=True)
    assert attack["pgd_linf"]["eps"] == pytest.approx(eps) and attack["pgd_linf"]["steps"] == steps
    assert attack["fgsm"]["eps"] == pytest.approx(eps)
    assert attack["pgd_l2"]["eps"] == (2.0 if eps == 0.3 else 0.5)
    assert attack["bim"]["eps"] == (0.3 if eps == 0.3 else 0.1), "DEEPSEC's own budget for the BIM family"
    assert OmegaConf.to_container(cfg.defense, resolve=True)["attack"]["eps"] == pytest.approx(eps)


def test_a_new_dataset_is_one_data_file(tmp_path):
    """An ImageNet-size family, stated only in the data config, resolves every attack and defense config."""
    threat = {
        "linf": 4 / 255,
        "l2": 3.0,
        "l1": 12.0,
        "linf_step": 1 / 255,
        "l2_step": 0.5,
        "l1_step": 1.2,
        "deepsec_linf": 4 / 255,
        "deepsec_linf_step": 1 / 255,
    }
    data = ["data.family=imagenet", *[f"data.threat.{k}={v}" for k, v in threat.items()]]
    for defense in ALL_DEFENSES:
        cfg = make_cfg("train", tmp_path, [*data, f"defense={defense}", f"attack=[{','.join(ALL_ATTACKS)}]"])
        resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["attack"]["pgd_linf"]["eps"] == pytest.approx(4 / 255)
    assert resolved["attack"]["pgd_l2"]["eps"] == 3.0 and resolved["attack"]["square_l2"]["eps"] == 3.0
    assert resolved["attack"]["pgd_linf"]["steps"] == 20, "other families get the natural-image settings"


def test_the_command_line_still_overrides_one_attack(tmp_path):
    cfg = make_cfg("train", tmp_path, ["attack=[pgd_linf,fgsm]", "attack.pgd_linf.eps=0.1"])
    attack = OmegaConf.to_container(cfg.attack, resolve=True)
    assert attack["pgd_linf"]["eps"] == 0.1 and attack["fgsm"]["eps"] == 0.3


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data._target_=torch.utils.data.Dataset", "~data.threat", "data.family=satellite"], "data.threat.linf"),
        (["data._target_=torch.utils.data.Dataset", "~data.family"], "data.family"),
    ],
)
def test_unknown_data_family_names_the_key_to_set(tmp_path, overrides, key):
    cfg = make_cfg("train", tmp_path, overrides)
    with pytest.raises(Exception) as err:
        OmegaConf.to_container(cfg, resolve=True)
    message = str(robustlab_cause(err.value))
    assert f"fix: set {key}=" in message and "\n" not in message


def test_a_family_without_budgets_gets_the_familys():
    from robustlab.resolvers import FAMILY_BUDGETS

    root = OmegaConf.create({"data": {"family": "imagenet", "threat": {"l2": 1.0}}, "eps": "${budget:linf}"})
    assert root.eps == FAMILY_BUDGETS["imagenet"]["linf"] == 4 / 255
    assert OmegaConf.create({**root, "eps": "${budget:l2}"}).eps == 1.0


def test_evaluation_reads_the_checkpoints_budgets_and_takes_a_new_one(tmp_path):
    """Attacks resolve against the checkpoint's own data config (a checkpoint of the old format, without
    budgets, is upgraded from its data config file); ``data.threat.<key>=`` changes one budget for all."""
    from robustlab.checkpoint import read_checkpoint
    from robustlab.evaluate import evaluate
    from tests.regression.cases import checkpoint

    assert "threat" not in torch.load(checkpoint("standard"), weights_only=True)["robustlab"]["data"]
    assert read_checkpoint(checkpoint("standard"))["robustlab"]["data"]["threat"]["linf"] == 0.3
    args = [f"ckpt={checkpoint('standard')}", "logger=none", "progress=false", "data.test_size=10", "attack=[fgsm,bim]"]
    default = evaluate(make_cfg("eval", tmp_path / "a", args))["attack_params"]
    assert default["fgsm"]["eps"] == 0.3 and default["bim"]["eps"] == 0.3
    changed = evaluate(make_cfg("eval", tmp_path / "b", [*args, "data.threat.linf=0.1"]))["attack_params"]
    assert changed["fgsm"]["eps"] == 0.1 and changed["bim"]["eps"] == 0.3, "BIM reads DEEPSEC's budget"
