"""Neuron coverage of the clean test set and of each attack's adversarial set, with the neuron bounds profiled
on the training split."""

import warnings
from collections.abc import Mapping

import lightning as L
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics import SumMetric

from robustlab.data.base import ImageDataModule
from robustlab.errors import RobustlabError
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.record import CLEAN, BatchRecord
from robustlab.metrics.coverage import (
    KMNCov,
    NBCov,
    NeuronProfile,
    SNACov,
    TKNCov,
    profile_neurons,
    profile_path,
    select_layers,
    weights_fingerprint,
)

COVERAGE = ("KMNCov", "NBCov", "SNACov", "TKNCov")


def chosen_layers(model: nn.Module, layers: Mapping | None) -> dict[str, nn.Module]:
    """:func:`select_layers` from a config node ``{types: [...], names: [...]}`` (default: Conv2d and Linear)."""
    return select_layers(model, **dict(layers)) if layers else select_layers(model)


def training_images(datamodule) -> Dataset:
    """The datamodule's training split without augmentation (an :class:`ImageDataModule`'s unaugmented pool
    at the training indices)."""
    if not isinstance(datamodule, ImageDataModule):
        raise RobustlabError(
            "no robustlab datamodule to profile neuron bounds on",
            "pass the coverage evaluation profile= a NeuronProfile or its file",
        )
    return datamodule.unaugmented_train_set()


def profile_training_split(
    trainer: L.Trainer, model: nn.Module, layers: Mapping[str, nn.Module], batch_size: int = 256
) -> NeuronProfile:
    """:func:`profile_neurons` over the whole training split of ``trainer.datamodule``; under DDP each
    process takes every ``world_size``-th image and the bounds are reduced over processes."""
    data = training_images(trainer.datamodule)
    shard = Subset(data, range(trainer.global_rank, len(data), trainer.world_size))
    return profile_neurons(model, DataLoader(shard, batch_size=batch_size), layers)


class Coverage(Evaluation):
    """KMNCov (``k`` sections), NBCov, SNACov and TKNCov (top ``top_k`` per layer) of the clean test set and of
    each attack's adversarial examples, over the neurons of ``layers`` (``{types, names}``; default Conv2d and
    Linear).

    Neuron bounds: ``profile`` (a :class:`NeuronProfile` or its file) if given; else the profile stored next to
    ``checkpoint`` (:class:`~robustlab.callbacks.CoverageProfiler`); if that is missing or was taken on other
    weights or layers, the checkpoint's own training split is profiled and cached there. ``results``: ``clean``
    and ``attacks.<name>`` (the four coverages), ``layers``, ``n_neurons``, ``n_samples``, ``k``, ``top_k`` and
    ``profile`` (where the bounds came from and on how many training images)."""

    journaled = ("metrics", "count")

    def __init__(
        self,
        layers: Mapping | None = None,
        k: int = 10,
        top_k: int = 2,
        checkpoint: str | None = None,
        profile: NeuronProfile | str | None = None,
        batch_size: int = 256,
    ):
        self.layers, self.k, self.top_k = layers, k, top_k
        self.checkpoint, self.profile, self.batch_size = checkpoint, profile, batch_size

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
            warnings.warn(
                f"{path} was profiled on other weights or layers; re-profiling the training split",
                RuntimeWarning,
                stacklevel=2,
            )
        profile = profile_training_split(trainer, model, layers, self.batch_size)
        if path is not None and trainer.is_global_zero:
            profile.save(path)
        return profile, str(path) if path is not None else "training split"

    def setup(self, context: Context) -> None:
        hooked = chosen_layers(context.classifier, self.layers)
        profile, source = self._profile(context.trainer, context.classifier, hooked)
        self.used = profile.restrict(hooked)
        self.source_info = {"source": source, "n_samples": profile.n_samples}
        context.request_layers(hooked, "neurons")
        self.names = list(hooked)
        self.metrics = nn.ModuleDict(
            {
                name: nn.ModuleDict(
                    {
                        "KMNCov": KMNCov(self.used, self.k),
                        "NBCov": NBCov(self.used),
                        "SNACov": SNACov(self.used),
                        "TKNCov": TKNCov(self.used, self.top_k),
                    }
                )
                for name in [CLEAN, *context.attacks]
            }
        ).to(context.device)
        self.count = SumMetric().to(context.device)

    def update(self, record: BatchRecord) -> None:
        for name in (CLEAN, *record.attacks):
            values = record.layer_outputs(name, self.names, "neurons")
            for metric in self.metrics[name].values():
                metric.update(values)
        self.count.update(len(record.x))

    def results(self) -> dict:
        values = {name: {key: m[key].compute().item() for key in COVERAGE} for name, m in self.metrics.items()}
        return {
            "clean": values.pop(CLEAN),
            "attacks": values,
            "layers": self.used.layers,
            "n_neurons": sum(self.used.layers.values()),
            "n_samples": int(self.count.compute()),
            "k": self.k,
            "top_k": self.top_k,
            "profile": self.source_info,
        }

    def scalars(self, results: dict) -> dict[str, float]:
        return {f"coverage/{key}": v for key, v in results["clean"].items()}

    def summary(self, results: dict) -> str:
        c = results["clean"]
        return "coverage (clean): " + ", ".join(f"{k} {c[k]:.4f}" for k in COVERAGE)
