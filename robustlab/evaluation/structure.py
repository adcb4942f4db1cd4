"""Model-structure metrics on the test batches: EBD, EBD-2, eps-ENI, Neuron Uncertainty and, per attack,
Neuron Sensitivity."""

import time
from collections.abc import Mapping

from torch import nn

from robustlab import progress
from robustlab.errors import RobustlabError
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.coverage import chosen_layers
from robustlab.evaluation.loop import summed
from robustlab.evaluation.record import CLEAN, BatchRecord
from robustlab.metrics.structure import EBD, EBD2, ENI, NeuronSensitivity, NeuronUncertainty
from robustlab.utils import synced_states, to_python


def _options(value, name: str) -> dict | None:
    """``True``/``{}`` -> default parameters, ``False``/``None`` -> off, a mapping -> those parameters."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise RobustlabError(
        f"{name} must be true, false or a mapping of parameters, got {value!r}", f"set {name}: {{...}} or {name}: false"
    )


class Structure(Evaluation):
    """On each test batch: :class:`EBD` (``ebd`` parameters), :class:`EBD2` (``ebd2``; its ``attack`` an Attack),
    :class:`ENI` (``eni``) and :class:`NeuronUncertainty` on the clean images, and :class:`NeuronSensitivity`
    between the clean images and each attack's adversarial examples, over ``layers`` (``{types, names}``; default
    Conv2d and Linear). Each of ``ebd``, ``ebd2``, ``eni`` is a mapping of parameters, ``true`` (defaults) or
    ``false`` (off).

    Randomness (EBD directions, ENI noise) is seeded per sample from the run's seed and its index, so results do
    not depend on batch size or process count. ``results``: ``EBD`` and ``EBD_censored``, ``EBD2`` (a dict, see
    :class:`EBD2`), ``ENI`` and ``ENI_skipped``, ``NeuronUncertainty`` (layer -> value), ``NeuronSensitivity``
    (attack -> layer -> value; a sentence saying why it does not apply when the model runs a layer on several
    inputs per image, as RC's vote does: the neuron metrics then read every one of those inputs),
    ``n_samples`` and ``seconds`` (per metric, summed over processes: EBD and EBD-2
    are searches as costly as attacks).
    """

    journaled = ("metrics", "seconds", "count", "unpaired")

    def __init__(
        self,
        layers: Mapping | None = None,
        ebd: Mapping | bool = True,
        ebd2: Mapping | bool = True,
        eni: Mapping | bool = True,
    ):
        self.layers = layers
        self.options = {"EBD": _options(ebd, "ebd"), "EBD2": _options(ebd2, "ebd2"), "ENI": _options(eni, "eni")}

    def setup(self, context: Context) -> None:
        self.model = context.classifier
        hooked = chosen_layers(self.model, self.layers)
        context.request_layers(hooked, "raw")
        self.names, self.device = list(hooked), context.device
        metrics = {
            "NeuronUncertainty": NeuronUncertainty(self.names),
            "NeuronSensitivity": nn.ModuleDict({a: NeuronSensitivity(self.names) for a in context.attacks}),
        }
        opts = self.options
        if opts["EBD"] is not None:
            metrics["EBD"] = EBD(**opts["EBD"])
        if opts["EBD2"] is not None:
            ebd2 = dict(opts["EBD2"])
            if "num_classes" not in ebd2:
                if not context.num_classes:
                    raise RobustlabError(
                        "the structure evaluation cannot tell the number of classes for EBD2", "set ebd2.num_classes"
                    )
                ebd2["num_classes"] = int(context.num_classes)
            metrics["EBD2"] = EBD2(**ebd2)
        if opts["ENI"] is not None:
            metrics["ENI"] = ENI(**opts["ENI"])
        self.metrics = nn.ModuleDict(metrics).to(context.device)
        self.seconds = {name: 0.0 for name in self.metrics}
        self.count, self.unpaired = 0, 0

    def update(self, record: BatchRecord) -> None:
        m, parts = self.metrics, list(self.metrics)
        clean = record.layer_outputs(CLEAN, self.names)
        self.count += len(record.x)
        for i, name in enumerate(parts):
            start = time.perf_counter()
            with progress.part(i, len(parts)):
                if name == "NeuronUncertainty":
                    m[name].update(clean)
                elif name == "NeuronSensitivity":
                    for attack in record.attacks:
                        adversarial = record.layer_outputs(attack, self.names)
                        if any(len(o) != len(record.x) for o in clean.values()):
                            self.unpaired = len(next(iter(clean.values()))) // len(record.x)
                        else:
                            m[name][attack].update(clean, adversarial)
                elif name == "EBD":
                    m[name].update(self.model, record.x, record.seeds, clean_logits=record.clean_logits)
                elif name == "EBD2":
                    m[name].update(self.model, record.x, record.y, record.seeds)
                else:
                    m[name].update(self.model, record.x, record.y, record.seeds, clean_logits=record.clean_logits)
            self.seconds[name] += time.perf_counter() - start

    def results(self) -> dict:
        m = self.metrics
        sensitivity = (
            {a: to_python(s.compute()) for a, s in m["NeuronSensitivity"].items()}
            if not self.unpaired
            else {
                a: f"not applicable: the model runs its layers on {self.unpaired} inputs per image (a vote), so no "
                "layer output pairs one clean image with its adversarial example"
                for a in m["NeuronSensitivity"]
            }
        )
        results = {
            "NeuronUncertainty": to_python(m["NeuronUncertainty"].compute()),
            "NeuronSensitivity": sensitivity,
            "n_samples": int(summed(self.count, self.device)),
        }
        if "EBD" in m:
            results["EBD_censored"] = int(synced_states(m["EBD"])["censored"])
            results["EBD"] = m["EBD"].compute().item()
        if "EBD2" in m:
            results["EBD2"] = to_python(m["EBD2"].compute())
        if "ENI" in m:
            results["ENI_skipped"] = int(synced_states(m["ENI"])["skipped"])
            results["ENI"] = m["ENI"].compute().item()
        results["seconds"] = {name: summed(s, self.device) for name, s in self.seconds.items()}
        return results

    def scalars(self, results: dict) -> dict[str, float]:
        return {
            k: v
            for k, v in (
                ("EBD", results.get("EBD")),
                ("ENI", results.get("ENI")),
                ("EBD2", results.get("EBD2", {}).get("EBD2")),
            )
            if v is not None
        }

    def summary(self, results: dict) -> str:
        parts = [f"{k} {v:.4f}" for k, v in self.scalars(results).items()]
        return "structure: " + (", ".join(parts) or f"neuron metrics over {len(results['NeuronUncertainty'])} layers")
