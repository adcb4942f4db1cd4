"""Model-structure metrics on the test batches: EBD, EBD-2, eps-ENI, Neuron Uncertainty and, per
attack, Neuron Sensitivity."""
from collections.abc import Mapping

import lightning as L
from torch import nn

from robustlab.callbacks.coverage_callback import (adversarial_batch, attack_source, batch_outputs, chosen_layers,
                                                   classifier)
from robustlab.errors import RobustlabError
from robustlab.metrics.structure import EBD, EBD2, ENI, NeuronSensitivity, NeuronUncertainty
from robustlab.utils import eval_mode, progress_bar, synced_states


def _options(value, name: str) -> dict | None:
    """``True``/``{}`` -> default parameters, ``False``/``None`` -> off, a mapping -> those parameters."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise RobustlabError(f"{name} must be true, false or a mapping of parameters, got {value!r}",
                         f"set {name}: {{...}} or {name}: false")


def _floats(value):
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    return value.tolist() if value.numel() > 1 else value.item()


class StructureCallback(L.Callback):
    """On each test batch ``(x, y, idx)``: :class:`EBD` (``ebd`` parameters), :class:`EBD2` (``ebd2``; its
    ``attack`` an Attack), :class:`ENI` (``eni``) and :class:`NeuronUncertainty` on the clean images, and
    :class:`NeuronSensitivity` between the clean images and each attack's adversarial examples
    (``AttackCallback.last_batch``), over ``layers`` (``{types, names}``; default Conv2d and Linear). Each
    of ``ebd``, ``ebd2``, ``eni`` is a mapping of parameters, ``true`` (defaults) or ``false`` (off).

    Randomness (EBD directions, ENI noise) is seeded per sample from ``seed`` and its index, so results do
    not depend on batch size or process count. ``results``: ``EBD`` and ``EBD_censored``, ``EBD2`` (a dict,
    see :class:`EBD2`), ``ENI`` and ``ENI_skipped``, ``NeuronUncertainty`` (layer -> value),
    ``NeuronSensitivity`` (attack -> layer -> value), ``n_samples``.
    """

    def __init__(self, layers: Mapping | None = None, ebd: Mapping | bool = True, ebd2: Mapping | bool = True,
                 eni: Mapping | bool = True, seed: int = 0, progress: bool = True):
        super().__init__()
        self.layers = layers
        self.options = {"EBD": _options(ebd, "ebd"), "EBD2": _options(ebd2, "ebd2"), "ENI": _options(eni, "eni")}
        self.seed, self.progress = int(seed), progress
        self.results: dict = {}

    def _num_classes(self, trainer, model: nn.Module) -> int:
        n = getattr(model, "num_classes", None) or getattr(trainer.datamodule, "num_classes", None)
        if not n:
            raise RobustlabError("StructureCallback cannot tell the number of classes for EBD2",
                                 "set ebd2.num_classes")
        return int(n)

    def on_test_epoch_start(self, trainer, pl_module):
        self.model = classifier(pl_module)
        self.hooked = chosen_layers(self.model, self.layers)
        self.attack_source = attack_source(trainer)
        if self.attack_source is not None:
            self.attack_source.output_readers += 1
        names = list(self.hooked)
        attacks = list(self.attack_source.attacks) if self.attack_source is not None else []
        metrics = {"NeuronUncertainty": NeuronUncertainty(names),
                   "NeuronSensitivity": nn.ModuleDict({a: NeuronSensitivity(names) for a in attacks})}
        opts = self.options
        if opts["EBD"] is not None:
            metrics["EBD"] = EBD(**opts["EBD"])
        if opts["EBD2"] is not None:
            ebd2 = dict(opts["EBD2"])
            if "num_classes" not in ebd2:
                ebd2["num_classes"] = self._num_classes(trainer, self.model)
            metrics["EBD2"] = EBD2(**ebd2)
        if opts["ENI"] is not None:
            metrics["ENI"] = ENI(**opts["ENI"])
        self.metrics = nn.ModuleDict(metrics).to(pl_module.device)
        self._bar = progress_bar(trainer, "structure", self.progress)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        x, y, idx = batch[0], batch[1], batch[2]
        adversarial = adversarial_batch(self.attack_source, idx, "StructureCallback")
        seeds = idx.long() + (self.seed << 32)
        m = self.metrics
        with eval_mode(pl_module):
            clean, clean_logits = batch_outputs(self.attack_source, self.model, self.hooked, "clean", x, idx)
            m["NeuronUncertainty"].update(clean)
            for name, x_adv in adversarial.items():
                adv, _ = batch_outputs(self.attack_source, self.model, self.hooked, name, x_adv, idx)
                m["NeuronSensitivity"][name].update(clean, adv)
            if "EBD" in m:
                m["EBD"].update(self.model, x, seeds)
            if "EBD2" in m:
                m["EBD2"].update(self.model, x, y, seeds)
            if "ENI" in m:
                m["ENI"].update(self.model, x, y, seeds, clean_logits=clean_logits)
        self._bar.update(1)

    def on_test_epoch_end(self, trainer, pl_module):
        self._bar.close()
        m = self.metrics
        counts = synced_states(m["NeuronUncertainty"])["count"]
        results = {"NeuronUncertainty": _floats(m["NeuronUncertainty"].compute()),
                   "NeuronSensitivity": {a: _floats(s.compute()) for a, s in m["NeuronSensitivity"].items()},
                   "n_samples": int(counts)}
        if "EBD" in m:
            results["EBD_censored"] = int(synced_states(m["EBD"])["censored"])
            results["EBD"] = m["EBD"].compute().item()
        if "EBD2" in m:
            results["EBD2"] = _floats(m["EBD2"].compute())
        if "ENI" in m:
            results["ENI_skipped"] = int(synced_states(m["ENI"])["skipped"])
            results["ENI"] = m["ENI"].compute().item()
        self.results = results
        log = {f"test/{k}": v for k, v in (("EBD", results.get("EBD")), ("ENI", results.get("ENI")),
                                            ("EBD2", results.get("EBD2", {}).get("EBD2"))) if v is not None}
        if log:
            pl_module.log_dict(log, sync_dist=False, rank_zero_only=False)
