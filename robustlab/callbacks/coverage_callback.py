"""Neuron coverage of the clean test set and of each attack's adversarial set, and the training-time
profiler that stores the neuron bounds with the run (``checkpoints/last.coverage.pt``)."""
import warnings
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics import SumMetric

from robustlab.callbacks.attack_callback import AttackCallback
from robustlab.data.base import ImageDataModule
from robustlab.errors import RobustlabError
from robustlab.metrics.coverage import (KMNCov, NBCov, NeuronProfile, SNACov, TKNCov, layer_outputs, neuron_values,
                                        profile_neurons, profile_path, select_layers, weights_fingerprint)
from robustlab.utils import eval_mode

COVERAGE = ("KMNCov", "NBCov", "SNACov", "TKNCov")


def classifier(pl_module: nn.Module) -> nn.Module:
    """The classifier a robustlab LightningModule wraps (``.model``), whose layer names profiles use."""
    return getattr(pl_module, "model", pl_module)


def chosen_layers(model: nn.Module, layers: Mapping | None) -> dict[str, nn.Module]:
    """:func:`select_layers` from a config node ``{types: [...], names: [...]}`` (default: Conv2d and Linear)."""
    return select_layers(model, **dict(layers)) if layers else select_layers(model)


def training_images(datamodule) -> Dataset:
    """The datamodule's training split without augmentation (an :class:`ImageDataModule`'s unaugmented pool
    at the training indices)."""
    if not isinstance(datamodule, ImageDataModule):
        raise RobustlabError("no robustlab datamodule to profile neuron bounds on",
                             "pass CoverageCallback(profile=...) a NeuronProfile or its file")
    if datamodule.train_set is None:
        datamodule.setup("fit")
    inner = datamodule.train_set.dataset
    return Subset(datamodule.load("val"), inner.indices) if isinstance(inner, Subset) else datamodule.train_set


def profile_training_split(trainer: L.Trainer, model: nn.Module, layers: Mapping[str, nn.Module],
                           batch_size: int = 256) -> NeuronProfile:
    """:func:`profile_neurons` over the whole training split of ``trainer.datamodule``; under DDP each
    process takes every ``world_size``-th image and the bounds are reduced over processes."""
    data = training_images(trainer.datamodule)
    shard = Subset(data, range(trainer.global_rank, len(data), trainer.world_size))
    return profile_neurons(model, DataLoader(shard, batch_size=batch_size), layers)


def attack_source(trainer: L.Trainer) -> AttackCallback | None:
    return next((c for c in trainer.callbacks if isinstance(c, AttackCallback)), None)


def adversarial_batch(source: AttackCallback | None, idx: torch.Tensor, who: str) -> dict[str, torch.Tensor]:
    """``{attack: x_adv}`` of the current test batch from ``AttackCallback.last_batch`` (the attack callback
    must run first); empty without attacks."""
    if source is None or not source.attacks:
        return {}
    last = getattr(source, "last_batch", None)
    if last is None or not torch.equal(last["idx"].to(idx.device), idx):
        raise RuntimeError(f"{who} needs AttackCallback.last_batch for the current test batch; "
                           "register the AttackCallback before it")
    return last["adv"]


def batch_outputs(source: AttackCallback | None, model: nn.Module, layers: Mapping[str, nn.Module], name: str,
                  x: torch.Tensor, idx: torch.Tensor, reduce=None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Outputs of ``layers`` (``reduce``-d per layer, e.g. :func:`neuron_values`) and the logits of ``model``
    (:func:`layer_outputs`) on the current test batch's clean images (``name="clean"``) or one attack's
    adversarial examples ``x``. With an attack callback that has several ``output_readers`` (the coverage and
    structure callbacks), they share one forward pass: the first to ask runs it, the raw outputs wait in
    ``last_batch`` and are dropped once every reader has taken them."""
    last = source.last_batch if source is not None else None
    if last is None or source.output_readers < 2 or not torch.equal(last["idx"].to(idx.device), idx):
        return layer_outputs(model, x, layers, reduce, return_logits=True)
    cache, key = last.setdefault("outputs", {}), (name, id(model), tuple(layers))
    if key not in cache:
        cache[key] = [layer_outputs(model, x, layers, return_logits=True), source.output_readers]
    entry = cache[key]
    entry[1] -= 1
    if entry[1] == 0:
        del cache[key]
    outputs, logits = entry[0]
    return ({n: reduce(o) for n, o in outputs.items()} if reduce is not None else outputs), logits


class CoverageProfiler(L.Callback):
    """After training, profile ``[low, high]`` of every neuron of ``layers`` (``{types, names}``; default
    Conv2d and Linear) over the whole, unaugmented training split and save it next to the last checkpoint
    (``checkpoints/last.ckpt`` -> ``checkpoints/last.coverage.pt``; ``<run dir>/coverage_profile.pt``
    without a ModelCheckpoint). :class:`CoverageCallback` finds it there."""

    def __init__(self, layers: Mapping | None = None, batch_size: int = 256):
        super().__init__()
        self.layers, self.batch_size = layers, batch_size
        self.profile: NeuronProfile | None = None
        self.path: Path | None = None

    def on_train_end(self, trainer, pl_module):
        model = classifier(pl_module)
        self.profile = profile_training_split(trainer, model, chosen_layers(model, self.layers), self.batch_size)

    def on_fit_end(self, trainer, pl_module):
        """Saved here: ModelCheckpoint may write ``last.ckpt`` in its own ``on_train_end``, after ours."""
        if self.profile is None:
            return
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        last = checkpoint.last_model_path if checkpoint is not None else ""
        self.path = profile_path(last) if last else Path(trainer.default_root_dir) / "coverage_profile.pt"
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.profile.save(self.path)


class CoverageCallback(L.Callback):
    """KMNCov (``k`` sections), NBCov, SNACov and TKNCov (top ``top_k`` per layer) of the clean test set
    and of each attack's adversarial examples (all of them, from ``AttackCallback.last_batch``), over the
    neurons of ``layers`` (``{types, names}``; default Conv2d and Linear).

    Neuron bounds: ``profile`` (a :class:`NeuronProfile` or its file) if given; else the profile stored
    next to ``checkpoint`` (:class:`CoverageProfiler`); if that is missing or was taken on other weights or
    layers, the checkpoint's own training split is profiled and cached there. ``results``: ``clean`` and
    ``attacks.<name>`` (the four coverages), ``layers``, ``n_neurons``, ``n_samples``, ``k``, ``top_k``
    and ``profile`` (where the bounds came from and on how many training images).
    """

    def __init__(self, layers: Mapping | None = None, k: int = 10, top_k: int = 2, checkpoint: str | None = None,
                 profile: NeuronProfile | str | None = None, batch_size: int = 256):
        super().__init__()
        self.layers, self.k, self.top_k = layers, k, top_k
        self.checkpoint, self.profile, self.batch_size = checkpoint, profile, batch_size
        self.results: dict = {}

    def _profile(self, trainer, model: nn.Module, layers: Mapping[str, nn.Module]) -> tuple[NeuronProfile, str]:
        if isinstance(self.profile, NeuronProfile):
            return self.profile, "given"
        if self.profile:
            return NeuronProfile.load(self.profile), str(self.profile)
        path = profile_path(self.checkpoint) if self.checkpoint else None
        if path is not None and path.is_file():
            stored = NeuronProfile.load(path)
            if stored.fingerprint == weights_fingerprint(model) and set(layers) <= set(stored.layers):
                return stored, str(path)
            warnings.warn(f"{path} was profiled on other weights or layers; re-profiling the training split",
                          RuntimeWarning, stacklevel=2)
        profile = profile_training_split(trainer, model, layers, self.batch_size)
        if path is not None and trainer.is_global_zero:
            profile.save(path)
        return profile, str(path) if path is not None else "training split"

    def on_test_epoch_start(self, trainer, pl_module):
        self.model = classifier(pl_module)
        self.hooked = chosen_layers(self.model, self.layers)
        profile, source = self._profile(trainer, self.model, self.hooked)
        self.used = profile.restrict(self.hooked)
        self.source_info = {"source": source, "n_samples": profile.n_samples}
        self.attack_source = attack_source(trainer)
        if self.attack_source is not None:
            self.attack_source.output_readers += 1
        names = ["clean", *(self.attack_source.attacks if self.attack_source is not None else {})]
        self.metrics = nn.ModuleDict({name: nn.ModuleDict({
            "KMNCov": KMNCov(self.used, self.k), "NBCov": NBCov(self.used), "SNACov": SNACov(self.used),
            "TKNCov": TKNCov(self.used, self.top_k)}) for name in names}).to(pl_module.device)
        self.count = SumMetric().to(pl_module.device)

    def _update(self, name: str, x: torch.Tensor, idx: torch.Tensor) -> None:
        values, _ = batch_outputs(self.attack_source, self.model, self.hooked, name, x, idx, neuron_values)
        for metric in self.metrics[name].values():
            metric.update(values)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        x, idx = batch[0], batch[2]
        adversarial = adversarial_batch(self.attack_source, idx, "CoverageCallback")
        with eval_mode(pl_module):
            self._update("clean", x, idx)
            for name, x_adv in adversarial.items():
                self._update(name, x_adv, idx)
        self.count.update(len(x))

    def on_test_epoch_end(self, trainer, pl_module):
        values = {name: {key: m[key].compute().item() for key in COVERAGE} for name, m in self.metrics.items()}
        self.results = {"clean": values.pop("clean"), "attacks": values, "layers": self.used.layers,
                        "n_neurons": sum(self.used.layers.values()), "n_samples": int(self.count.compute()),
                        "k": self.k, "top_k": self.top_k, "profile": self.source_info}
        log = {f"test/coverage/{key}": v for key, v in self.results["clean"].items()}
        pl_module.log_dict(log, sync_dist=False, rank_zero_only=False)
