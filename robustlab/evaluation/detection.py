"""A detector's false-positive rate on clean test images and its detection rate on each attack's successful
adversarial examples."""

import torch
from torch import nn
from torchmetrics import Metric

from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.record import BatchRecord
from robustlab.metrics.functional import ratio
from robustlab.models.base import detector
from robustlab.success import attack_success
from robustlab.utils import synced_states


class _FlagRate(Metric):
    """Share of inputs a detector flags, from sum-reduced counts (``flagged / total``)."""

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("flagged", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, flags: torch.Tensor) -> None:
        self.flagged += flags.sum()
        self.total += flags.numel()

    def compute(self) -> torch.Tensor:
        return ratio(self.flagged, self.total, "detection rate")


class Detection(Evaluation):
    """Runs the evaluated model's detector (:class:`~robustlab.models.base.DetectorModel`) on the clean images and
    on every attack's adversarial examples. ``results``: ``threshold`` (a float, or a list for several scores),
    ``fpr`` (share of all clean test images flagged, with ``n_clean``), and per attack ``detection_rate``: the
    share flagged among the successful adversarial examples of correctly classified clean images, ``n`` of them.
    A model without a detector gives no section."""

    journaled = ("rates",)

    def setup(self, context: Context) -> None:
        self.detector = detector(context.module)
        self.rates = nn.ModuleDict({"clean": _FlagRate(), **{name: _FlagRate() for name in context.attacks}})
        self.rates.to(context.device)

    def update(self, record: BatchRecord) -> None:
        if self.detector is None:
            return
        with torch.no_grad():
            self.rates["clean"].update(self.detector.detect(record.x))
            for name, result in record.attacks.items():
                keep = attack_success(record.clean_pred, result.logits.argmax(1), record.y, result.target)
                self.rates[name].update(self.detector.detect(result.x_adv[keep]))

    def results(self) -> dict | None:
        if self.detector is None:
            return None
        threshold = self.detector.threshold.tolist()
        states = {name: synced_states(rate) for name, rate in self.rates.items()}

        def rate(name: str, what: str) -> float:
            return ratio(states[name]["flagged"], states[name]["total"], what).item()

        return {
            "threshold": threshold[0] if len(threshold) == 1 else threshold,
            "fpr": rate("clean", "detector FPR"),
            "n_clean": int(states["clean"]["total"]),
            "attacks": {
                name: {"detection_rate": rate(name, f"{name} detection rate"), "n": int(states[name]["total"])}
                for name in states
                if name != "clean"
            },
        }

    def scalars(self, results: dict) -> dict[str, float]:
        return {
            "detection/fpr": results["fpr"],
            **{f"{name}/detection_rate": r["detection_rate"] for name, r in results["attacks"].items()},
        }

    def summary(self, results: dict) -> str:
        return f"detection: clean FPR {results['fpr']:.4f}" + "".join(
            f", {name} detected {r['detection_rate']:.4f} of {r['n']}" for name, r in results["attacks"].items()
        )
