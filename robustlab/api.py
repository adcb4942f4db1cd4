"""``robustlab.evaluate_model``: evaluate any ``nn.Module`` on tensors or a ``DataLoader`` in one call, through the
same code path as ``evaluate.py`` (:func:`robustlab.evaluate.run`)."""

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader

from robustlab.cli import CONFIG_DIR, compose_config
from robustlab.data.external import ExternalData, Tensors
from robustlab.errors import RobustlabError
from robustlab.evaluate import run
from robustlab.resolvers import FAMILY_BUDGETS


class Loader(ExternalData):
    """A user's ``DataLoader`` of ``(x, y)`` batches in [0,1], evaluated with its dataset and batch size."""

    name = "loader"

    def __init__(self, loader: DataLoader, **kwargs):
        super().__init__(eval_batch_size=loader.batch_size, **kwargs)
        self.dataset = loader.dataset
        x, y = self.dataset[0]
        self.in_channels, self.image_size = x.shape[0], x.shape[-1]
        labels = getattr(self.dataset, "targets", None)
        if labels is None:
            labels = [int(self.dataset[i][1]) for i in range(len(self.dataset))]
        self._classes(torch.as_tensor(labels), "the loader")

    def test_images(self):
        return self.dataset


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, shapes, dtypes and values), what identifies an in-memory model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def family_of(channels: int, image_size: int) -> str:
    """The data family images look like: one channel (digits), ImageNet-size (>= 128 px) or CIFAR-like."""
    return "mnist" if channels == 1 else "imagenet" if image_size >= 128 else "cifar"


def attack_configs(names: Sequence[str], norm: str) -> list[str]:
    """The attack configs of ``names``: ``configs/attack/<name>.yaml``, else ``<name>_<norm>.yaml``."""
    found = []
    for name in names:
        option = next((n for n in (name, f"{name}_{norm}") if (CONFIG_DIR / "attack" / f"{n}.yaml").is_file()), None)
        if option is None:
            options = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "attack").glob("*.yaml")))
            raise RobustlabError(f"unknown attack {name!r} for norm {norm}", f"choose from {options}")
        found.append(option)
    return found


def evaluate_model(
    model: nn.Module,
    x: torch.Tensor | DataLoader,
    y: torch.Tensor | None = None,
    *,
    attacks: Sequence[str] = ("pgd",),
    eps: float | None = None,
    norm: str = "linf",
    step: float | None = None,
    metrics: Sequence[str] = (),
    suite: Sequence[str] = (),
    batch_size: int = 256,
    family: str | None = None,
    output_dir: str | Path | None = None,
    seed: int = 0,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate ``model`` (an ``nn.Module`` taking [0,1] images, on any device) on ``x, y`` (tensors, uint8 or
    float, NCHW or NHWC) or a ``DataLoader`` ``x`` of ``(x, y)`` batches, and return the dict ``report.json``
    holds; with ``output_dir`` it is also written there.

    ``attacks`` are attack config names (``configs/attack``; ``pgd`` with ``norm="l2"`` picks ``pgd_l2``); an
    attack config with a ``norm`` option is set to ``norm``. ``eps`` is the ``norm`` budget (by default the
    family's, :data:`robustlab.resolvers.FAMILY_BUDGETS`) and ``step`` the PGD-style step (default ``eps / 4``).
    ``metrics`` are attack-utility metric names (``configs/metric``), ``suite`` suite names (``configs/suite``);
    ``overrides`` are any further ``evaluate.py`` command-line overrides. The family (``mnist``, ``cifar``,
    ``imagenet``) is guessed from the image shape unless given."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if isinstance(x, DataLoader):
        data = Loader(x, seed=seed)
    else:
        if y is None:
            raise RobustlabError("evaluate_model(model, x) without labels", "pass y, or a DataLoader of (x, y)")
        data = Tensors(x=x.detach().cpu(), y=torch.as_tensor(y).cpu(), eval_batch_size=batch_size, seed=seed)
    family = family or family_of(data.in_channels, data.image_size)
    threat = dict(FAMILY_BUDGETS.get(family, {}))
    if eps is not None:
        threat |= {norm: eps, f"{norm}_step": step if step is not None else eps / 4}
        if norm == "linf":
            threat |= {"deepsec_linf": eps, "deepsec_linf_step": step if step is not None else eps / 4}
    data.family, data.threat = family, threat
    names = attack_configs(attacks, norm)
    args = [f"attack=[{','.join(names)}]", f"metric=[{','.join(metrics)}]", f"seed={seed}", "logger=none"]
    if suite:
        args.append(f"suite=[{','.join(suite)}]")
    for name in names:
        node = OmegaConf.load(CONFIG_DIR / "attack" / f"{name}.yaml")[name]
        if "norm" in node and node.norm != norm:
            args += [f"attack.{name}.norm={norm}", f"attack.{name}.eps=${{budget:{norm}}}"]
    if device.type == "cuda":
        args += ["trainer.accelerator=gpu", f"trainer.devices=[{device.index or 0}]"]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(output_dir) if output_dir is not None else Path(scratch)
        cfg = compose_config(
            "eval", [*args, f"paths.output_dir={out}", f"write_report={output_dir is not None}", *overrides]
        )
        with open_dict(cfg):
            cfg.data = {"family": family, "threat": threat}
        source = {
            "source": "python",
            "target": f"{type(model).__module__}.{type(model).__qualname__}",
            "weights_sha256": state_sha256(model),
        }
        was_training = model.training
        try:
            return run(cfg, model.eval(), data, source)
        finally:
            model.train(was_training)
