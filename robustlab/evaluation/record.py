"""The batch record: everything the evaluation loop computed on one test (or validation) batch, shared by
every evaluation, and the layer outputs it computes at most once per image set, on request."""

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from robustlab.attacks.base import AttackResult
from robustlab.errors import RobustlabError
from robustlab.metrics.coverage import append_output, neuron_values, recording

CLEAN = "clean"


class LayerRequests:
    """The layers the evaluations read, by name, and in which form: ``"raw"`` (whole outputs) or ``"neurons"``
    (one value per neuron, :func:`~robustlab.metrics.coverage.neuron_values`). One hooked forward pass per
    image set records every requested layer in every requested form."""

    def __init__(self):
        self.layers: dict[str, nn.Module] = {}
        self.forms: dict[str, set[str]] = {}
        self.readers = 0
        self.copy = False

    def add(self, layers: Mapping[str, nn.Module], form: str) -> None:
        if form not in ("raw", "neurons"):
            raise ValueError(f"unknown layer output form {form!r}")
        for name, module in layers.items():
            if self.layers.setdefault(name, module) is not module:
                raise RobustlabError(
                    f"two evaluations read different modules under the layer name {name!r}",
                    "select layers of the evaluated model by their named_modules() names",
                )
            self.forms.setdefault(name, set()).add(form)
        self.readers += 1

    def missing(self, store: dict[str, dict[str, torch.Tensor]]) -> list[str]:
        """The requested layers that ``store`` (``{form: {layer: output}}``) has no output of."""
        return [n for n in self.layers if n not in store["raw"] and n not in store["neurons"]]

    @contextmanager
    def hooked(self) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
        """While active, each requested layer's output (detached) goes into the yielded ``{form: {layer:
        output}}`` (a layer called several times per forward: concatenated, see ``append_output``). The outputs
        are the model's own tensors, not copies, unless a layer's output was once changed in place after its
        hook ran (an in-place activation): then the store is emptied on exit and every later pass copies."""
        store: dict[str, dict[str, torch.Tensor]] = {"raw": {}, "neurons": {}}
        seen: list[tuple[torch.Tensor, int]] = []
        copy = self.copy

        def keep(name: str, out: torch.Tensor) -> None:
            seen.append((out, out._version))
            if "raw" in self.forms[name]:
                append_output(store["raw"], name, out.clone() if copy else out)
            if "neurons" in self.forms[name]:
                values = neuron_values(out)
                append_output(store["neurons"], name, values.clone() if copy else values)

        with recording(self.layers, keep):
            yield store
        if not copy and any(t._version != v for t, v in seen):
            self.copy = True
            store["raw"].clear()
            store["neurons"].clear()

    @contextmanager
    def watching(self, model: nn.Module) -> Iterator["OutputWatch"]:
        """While active, every forward pass of ``model`` leaves references (no copies) to the requested layers'
        outputs in the yielded :class:`OutputWatch`, from which an attack keeps those of the images it returns."""
        watch = OutputWatch(self)
        handles = [model.register_forward_pre_hook(watch.begin), model.register_forward_hook(watch.end)]
        try:
            with recording(self.layers, watch.layer):
                yield watch
        finally:
            for h in handles:
                h.remove()


class OutputWatch:
    """The requested layers' outputs of the latest forward pass of a model (see :meth:`LayerRequests.watching`);
    :meth:`take` hands them to the attack that keeps that pass's logits, so an adversarial set needs no hooked pass
    of its own."""

    def __init__(self, requests: LayerRequests):
        self.requests = requests
        self.output: torch.Tensor | None = None
        self.seen: dict[str, tuple[torch.Tensor, int]] = {}
        self.usable = True

    def begin(self, module, args) -> None:
        self.output, self.seen, self.usable = None, {}, True

    def layer(self, name: str, out: torch.Tensor) -> None:
        self.usable = self.usable and name not in self.seen  # a layer run twice per pass (a vote) pairs no rows
        self.seen[name] = (out, out._version)

    def end(self, module, args, output) -> None:
        self.output = output if isinstance(output, torch.Tensor) else None

    def take(self, logits: torch.Tensor) -> dict[str, dict] | None:
        """``{form: {layer: output}}`` of the latest pass (the model's own tensors, not copies), if ``logits`` are
        that pass's output itself and no layer output was changed in place since; else ``None``."""
        out = self.output
        if out is None or not self.usable or logits.shape != out.shape or logits.data_ptr() != out.data_ptr():
            return None
        if len(self.seen) != len(self.requests.layers):
            return None
        if any(t._version != v or len(t) != len(out) for t, v in self.seen.values()):
            return None
        store: dict[str, dict[str, torch.Tensor]] = {"raw": {}, "neurons": {}}
        for name, (t, _) in self.seen.items():
            if "raw" in self.requests.forms[name]:
                store["raw"][name] = t
            if "neurons" in self.requests.forms[name]:
                store["neurons"][name] = neuron_values(t)
        return store


@dataclass
class BatchRecord:
    """One batch as every evaluation sees it: the clean images ``x`` in [0,1], labels ``y``, sample indices
    ``idx`` (in the split), per-example ``seeds``, the model's ``clean_logits`` and, per attack, its
    :class:`~robustlab.attacks.base.AttackResult` (images, logits, success, targets, counts, seconds).

    :meth:`layer_outputs` gives the requested layers' outputs of the clean set or of one attack's set, from one
    hooked forward pass per set, shared by every reader and dropped once each reader has taken it;
    :meth:`baseline_logits` the baseline model's logits on the clean images, computed once.

    A randomised model is scored on several draws: :meth:`draw_logits` gives ``(D, B, classes)`` logits of ``D``
    independent forward passes of the clean images or of an attack's images (``D = 1``, the clean logits and the
    attack's own logits, for a deterministic model)."""

    stage: str
    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    seeds: torch.Tensor
    clean_logits: torch.Tensor
    attacks: dict[str, AttackResult]
    model: nn.Module
    requests: LayerRequests = field(default_factory=LayerRequests)
    baseline: nn.Module | None = None
    draws: dict[str, torch.Tensor] | None = None
    _outputs: dict[str, list] = field(default_factory=dict)
    _baseline_logits: torch.Tensor | None = None

    @property
    def clean_pred(self) -> torch.Tensor:
        return self.clean_logits.argmax(1)

    def draw_logits(self, name: str) -> torch.Tensor:
        """``(D, B, classes)``: the logits of the ``D`` scoring draws of image set ``name`` ("clean" or an attack)."""
        if self.draws is not None:
            return self.draws[name]
        return (self.clean_logits if name == CLEAN else self.attacks[name].logits)[None]

    def images(self, name: str) -> torch.Tensor:
        """The clean images (``name="clean"``) or attack ``name``'s adversarial images."""
        return self.x if name == CLEAN else self.attacks[name].x_adv

    def add_outputs(self, name: str, store: dict[str, dict], rows: torch.Tensor | None = None) -> None:
        """Take the layer outputs of image set ``name`` recorded elsewhere (the clean pass of the test step, an
        attack's own passes), of all images or of those marked in ``rows``; :meth:`layer_outputs` runs the others."""
        if not self.requests.missing(store):
            self._outputs[name] = [store, self.requests.readers, rows]

    def layer_outputs(self, name: str, layers: Iterable[str], form: str = "raw") -> dict[str, torch.Tensor]:
        """``{layer: output}`` of ``layers`` (requested at set-up, in this order) on image set ``name``, as
        ``form``. Each reader takes each image set once."""
        if name not in self._outputs:
            self._outputs[name] = [self._hooked_pass(self.images(name)), self.requests.readers, None]
        entry = self._outputs[name]
        if entry[2] is not None:
            rest = ~entry[2]
            if rest.any():
                fresh = self._hooked_pass(self.images(name)[rest])
                for kind, per in fresh.items():
                    for n, t in per.items():
                        entry[0][kind][n][rest] = t
            entry[2] = None
        entry[1] -= 1
        if entry[1] <= 0:
            del self._outputs[name]
        return {n: entry[0][form][n] for n in layers}

    def _hooked_pass(self, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        for _ in range(2):  # again, copying, if a layer's output was changed in place (LayerRequests.hooked)
            with self.requests.hooked() as store, torch.no_grad():
                self.model(images)
            missing = self.requests.missing(store)
            if not missing:
                return store
        raise RobustlabError(f"layer {missing[0]!r} did not run in the forward pass", "select layers the model uses")

    def baseline_logits(self) -> torch.Tensor:
        """The baseline model's logits on the clean images (one forward pass per batch, shared)."""
        if self.baseline is None:
            raise RobustlabError(
                "an evaluation needs the baseline model but none was given",
                "add baseline=PATH, the checkpoint of the undefended model",
            )
        if self._baseline_logits is None:
            with torch.no_grad():
                self._baseline_logits = self.baseline(self.x)
        return self._baseline_logits
