"""DEEPSEC's defense utility: the evaluated (defended) model against its raw baseline on the test batches."""

from torch import nn

from robustlab.errors import RobustlabError
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.record import BatchRecord
from robustlab.metrics import CAV, CCV, COS, CRR, CSR
from robustlab.utils import synced_states


class DefenseUtility(Evaluation):
    """The evaluated model's and the run's baseline model's (``baseline=PATH``) logits on the same clean images.
    ``results``: CAV, CRR, CSR, CCV and COS (DEEPSEC Sec. II-D; see :mod:`robustlab.metrics.defense_utility`) and
    ``n_samples``, reduced over all processes. Without a baseline it raises at set-up, or, with
    ``required=False`` (``suite=full``), reports ``{"skipped": ...}``."""

    journaled = ("metrics",)
    needs_final_iterates = False

    def __init__(self, required: bool = True):
        self.required = required

    def setup(self, context: Context) -> None:
        self.active = context.baseline is not None
        if not self.active and self.required:
            raise RobustlabError(
                "the defense utility metrics need the raw model to compare with",
                "add baseline=PATH, the checkpoint of the undefended model",
            )
        self.metrics = nn.ModuleDict({"CAV": CAV(), "CRR": CRR(), "CSR": CSR(), "CCV": CCV(), "COS": COS()})
        self.metrics.to(context.device)

    def update(self, record: BatchRecord) -> None:
        if self.active:
            for metric in self.metrics.values():
                metric.update(record.clean_logits, record.baseline_logits(), record.y)

    def results(self) -> dict:
        if not self.active:
            return {"skipped": "no baseline=PATH given"}
        n = int(synced_states(self.metrics["CAV"])["total"])
        return {**{name: metric.compute().item() for name, metric in self.metrics.items()}, "n_samples": n}

    def scalars(self, results: dict) -> dict[str, float]:
        return {f"defense/{k}": v for k, v in results.items() if k not in ("n_samples", "skipped")}

    def summary(self, results: dict) -> str:
        if "skipped" in results:
            return f"defense utility: skipped ({results['skipped']})"
        return "defense utility: " + ", ".join(f"{k} {results[k]:.4f}" for k in ("CAV", "CRR", "CSR", "CCV", "COS"))
