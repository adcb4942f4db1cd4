"""The evaluation interface: what every evaluation implements, and the context it is set up with."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.evaluation.journal import capture, restore
from robustlab.evaluation.record import BatchRecord, LayerRequests


@dataclass
class Context:
    """What an evaluation may use: the ``trainer`` and evaluated ``module`` (in eval mode while evaluating),
    the ``classifier`` it wraps (whose layers are read), the ``datamodule``, the ``stage`` ("test" or
    "validate"), the ``attacks`` run on every batch, the run's ``seed``, the ``baseline`` model (or None) and the
    number of ``draws`` each image set is scored on (more than 1 for a randomised model)."""

    trainer: L.Trainer
    module: nn.Module
    classifier: nn.Module
    datamodule: Any
    stage: str
    attacks: dict[str, Attack]
    seed: int
    baseline: nn.Module | None
    requests: LayerRequests
    draws: int = 1

    @property
    def device(self) -> torch.device:
        return self.module.device if hasattr(self.module, "device") else next(self.module.parameters()).device

    @property
    def num_classes(self) -> int | None:
        return getattr(self.classifier, "num_classes", None) or getattr(self.datamodule, "num_classes", None)

    def request_layers(self, layers: Mapping[str, nn.Module], form: str = "raw") -> None:
        """Ask for these layers' outputs on every image set (``"raw"`` or per-neuron ``"neurons"``): read them
        with :meth:`BatchRecord.layer_outputs`, once per image set."""
        self.requests.add(layers, form)


class Evaluation:
    """One evaluation of the test batches. The loop calls :meth:`setup` at the start of the stage,
    :meth:`update` with every :class:`BatchRecord` and :meth:`results` at the end (on every process; results
    are reduced over processes), then logs :meth:`scalars` and prints :meth:`summary`.

    Its results go to ``report.json[name]``, ``name`` being its key in the ``evaluations`` config; an evaluation
    that fills several top-level sections (or none: ``()``) names them in ``sections`` and returns ``{section:
    value}``. An evaluation reads only the record and its own state, never another evaluation's."""

    name: str = ""
    sections: tuple[str, ...] | None = None
    #: The attributes holding what :meth:`update` accumulates (modules of metrics, or plain values), written to the
    #: evaluation journal after every batch and put back on ``resume`` (:mod:`robustlab.evaluation.journal`).
    journaled: tuple[str, ...] = ()
    #: Whether :meth:`update` reads more of a fooled example than its success (its returned image or logits), so
    #: that attacks must return what a full run returns; when no evaluation does, attacks with ``early_stop=None``
    #: stop each example at its first success (:meth:`EvaluationLoop.resolve_early_stop`).
    needs_final_iterates: bool = True

    def report_sections(self) -> tuple[str, ...]:
        """The top-level ``report.json`` keys this evaluation writes (``sections``, default its name)."""
        return (self.name,) if self.sections is None else self.sections

    def setup(self, context: Context) -> None:
        """Prepare state for ``context.stage`` (metrics on ``context.device``, layer requests)."""

    def update(self, record: BatchRecord) -> None:
        raise NotImplementedError

    def journal_state(self) -> dict[str, Any]:
        """What :meth:`update` has accumulated so far (the :attr:`journaled` attributes), for the journal."""
        return {field: capture(getattr(self, field)) for field in self.journaled if hasattr(self, field)}

    def load_journal_state(self, state: dict[str, Any], device: torch.device) -> None:
        """Put back a :meth:`journal_state` after :meth:`setup`, as if the journaled batches had been updated."""
        for field, value in state.items():
            setattr(self, field, restore(getattr(self, field), value, device))

    def results(self) -> Any:
        """The report section (plain Python values), reduced over processes; ``None`` for no section."""
        raise NotImplementedError

    def scalars(self, results: Any) -> dict[str, float]:
        """Values for the loggers, keyed under the stage prefix (``test/<key>``)."""
        return {}

    def checks(self, results: Any) -> list[dict]:
        """Entries this evaluation adds to ``report.json["checks"]`` (``{"name", "status", "evidence", "fix"}``),
        from its own results."""
        return []

    def summary(self, results: Any) -> str | None:
        """One line for the end-of-run summary."""
        return None
