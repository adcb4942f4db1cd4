"""Neuron coverage (DeepGauge, Ma et al. 2018; comprehensive-evaluation paper Sec. III-A.1): layer
outputs through temporary forward hooks, per-neuron bounds profiled on training data, and the
KMNCov / NBCov / SNACov / TKNCov metrics.

A neuron is one output unit of a selected layer; for outputs shaped ``(B, C, *spatial)`` (conv
layers) a neuron is a channel and its value is the spatial mean. Every state is O(neurons x k),
reduced with ``max`` (logical OR), ``min`` or ``sum``: memory never grows with the number of samples.
"""

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchmetrics import Metric

from robustlab.errors import RobustlabError
from robustlab.metrics.functional import ratio
from robustlab.utils import eval_mode, save_atomic

DEFAULT_TYPES = ("Conv2d", "Linear")


def _matches(module: nn.Module, types: Sequence[str | type]) -> bool:
    for t in types:
        cls = getattr(nn, t, None) if isinstance(t, str) else t
        if isinstance(cls, type) and isinstance(module, cls) or type(module).__name__ == t:
            return True
    return False


def select_layers(
    model: nn.Module, types: Sequence[str | type] = DEFAULT_TYPES, names: Sequence[str] = ()
) -> dict[str, nn.Module]:
    """The modules of ``model`` (nested ones included, in ``named_modules`` order) that are instances of
    ``types`` (``torch.nn`` class names, other class names, or classes) or whose dotted name is in ``names``."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        known = ", ".join(list(modules)[1:8])
        raise RobustlabError(
            f"no layer named {missing[0]!r} in {type(model).__name__}",
            f"use dotted names from model.named_modules(), e.g. {known}",
        )
    chosen = {n: m for n, m in modules.items() if n in names or _matches(m, types)}
    if not chosen:
        raise RobustlabError(
            f"no layer of {type(model).__name__} matches types {list(types)} or names {list(names)}",
            "select layers by a module type the model contains (e.g. Conv2d, Linear) or by name",
        )
    return chosen


def neuron_values(output: torch.Tensor) -> torch.Tensor:
    """``(B, neurons)``: one value per neuron, the channel's spatial mean for ``(B, C, *spatial)`` outputs."""
    if output.dim() > 2:
        return output.flatten(2).mean(2)
    return output.reshape(len(output), -1)


@contextmanager
def recording(layers: Mapping[str, nn.Module], keep: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """While active, every output of each layer in ``layers`` goes, detached, to ``keep(name, output)``. The hooks
    are removed on exit, also after an error."""

    def hook(name):
        def record(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise RobustlabError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor",
                    "select layers whose output is one tensor",
                )
            keep(name, output.detach())

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def append_output(store: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    """``store[name] = value``, or, for a layer that runs several times in one forward pass (a vote over noisy
    copies, a shared activation module), the outputs concatenated along the batch dimension."""
    if name not in store:
        store[name] = value
    elif store[name].shape[1:] == value.shape[1:]:
        store[name] = torch.cat([store[name], value])
    else:
        raise RobustlabError(
            f"layer {name!r} ran several times in one forward pass with outputs shaped {tuple(store[name].shape[1:])}"
            f" and {tuple(value.shape[1:])}",
            "select layers whose every call gives outputs of one shape (not a shared activation module)",
        )


@contextmanager
def hooked(layers: Mapping[str, nn.Module], reduce=None) -> Iterator[dict[str, torch.Tensor]]:
    """Record, while active, each layer's (detached, copied, optionally ``reduce``-d) output into the
    yielded dict (a layer called several times per forward: its outputs concatenated, :func:`append_output`)."""
    store: dict[str, torch.Tensor] = {}
    with recording(
        layers, lambda n, out: append_output(store, n, (reduce(out) if reduce is not None else out).clone())
    ):
        yield store


def layer_outputs(
    model: nn.Module, x: torch.Tensor, layers: Mapping[str, nn.Module], reduce=None, return_logits: bool = False
):
    """``{name: output}`` of ``layers`` for one forward of ``x`` (no gradients); the hooks are removed afterwards.
    ``reduce=neuron_values`` keeps one value per neuron instead of the whole output. ``return_logits``: also
    return the model's output of that forward, as ``(outputs, logits)``."""
    with hooked(layers, reduce) as store, torch.no_grad():
        logits = model(x)
        out = dict(store)
    missing = [n for n in layers if n not in out]
    if missing:
        raise RobustlabError(f"layer {missing[0]!r} did not run in the forward pass", "select layers the model uses")
    outputs = {n: out[n] for n in layers}
    return (outputs, logits) if return_logits else outputs


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of ``model``'s state dict (names and bytes): tells whether a profile belongs to these weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class NeuronProfile:
    """Per-neuron ``[low, high]`` seen on the training data: ``layers`` maps each layer name to its neuron
    count (in the order of ``low``/``high``); ``fingerprint`` identifies the weights it was taken on."""

    layers: dict[str, int]
    low: torch.Tensor
    high: torch.Tensor
    n_samples: int
    fingerprint: str = ""

    def restrict(self, names: Iterable[str]) -> "NeuronProfile":
        """The profile of the layers ``names`` only (in that order)."""
        offsets, start = {}, 0
        for name, size in self.layers.items():
            offsets[name], start = (start, start + size), start + size
        names = list(names)
        missing = [n for n in names if n not in offsets]
        if missing:
            raise RobustlabError(
                f"the neuron profile has no layer {missing[0]!r}",
                "profile the layers you measure coverage on (profile_neurons with the same layers)",
            )
        index = torch.cat([torch.arange(*offsets[n]) for n in names])
        return NeuronProfile(
            {n: self.layers[n] for n in names}, self.low[index], self.high[index], self.n_samples, self.fingerprint
        )

    def save(self, path: str | Path) -> None:
        save_atomic(
            {
                "layers": list(self.layers),
                "sizes": list(self.layers.values()),
                "low": self.low.cpu(),
                "high": self.high.cpu(),
                "n_samples": int(self.n_samples),
                "fingerprint": self.fingerprint,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> "NeuronProfile":
        """Read a profile written by :meth:`save`, with ``torch.load(weights_only=True)``."""
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            return cls(dict(zip(d["layers"], d["sizes"])), d["low"], d["high"], int(d["n_samples"]), d["fingerprint"])
        except Exception as err:
            raise RobustlabError(
                f"{path} is not a readable neuron profile ({type(err).__name__})",
                "delete it to re-profile, or pass a file written by NeuronProfile.save",
            ) from None


def profile_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's neuron profile lives: ``checkpoints/last.ckpt`` -> ``checkpoints/last.coverage.pt``."""
    return Path(checkpoint).with_suffix(".coverage.pt")


def _concat(outputs: Mapping[str, torch.Tensor], layers: Mapping[str, int]) -> torch.Tensor:
    """``(B, N)`` neuron values of ``layers`` (in order) from raw or per-neuron ``outputs``."""
    if list(outputs) != list(layers):
        raise RobustlabError(
            f"got outputs of layers {list(outputs)} but the metric measures {list(layers)}",
            "pass layer_outputs(model, x, layers) for the profiled layers, in profile order",
        )
    values = [neuron_values(outputs[n]) for n in layers]
    for (name, size), v in zip(layers.items(), values):
        if v.shape[1] != size:
            raise RobustlabError(
                f"layer {name!r} has {v.shape[1]} neurons but the profile has {size}",
                "re-profile the model (profile_neurons) for these weights",
            )
    return torch.cat(values, 1)


class NeuronRange(Metric):
    """Streaming per-neuron minimum and maximum (``min``/``max`` reductions) over the samples seen:
    the profile behind the coverage metrics. ``compute()`` gives ``{"low", "high", "n_samples"}``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, layers: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.layers = dict(layers)
        n = sum(self.layers.values())
        self.add_state("low", torch.full((n,), float("inf")), dist_reduce_fx="min")
        self.add_state("high", torch.full((n,), float("-inf")), dist_reduce_fx="max")
        self.add_state("n_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, outputs: Mapping[str, torch.Tensor]) -> None:
        v = _concat(outputs, self.layers).to(self.low.dtype)
        if len(v):
            self.low = torch.minimum(self.low, v.amin(0))
            self.high = torch.maximum(self.high, v.amax(0))
        self.n_samples += len(v)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"low": self.low, "high": self.high, "n_samples": self.n_samples}


def profile_neurons(
    model: nn.Module,
    batches: Iterable,
    layers: Mapping[str, nn.Module] | None = None,
    device: torch.device | str | None = None,
) -> NeuronProfile:
    """Profile ``[low, high]`` of every neuron of ``layers`` (default: all Conv2d and Linear layers) over all
    ``batches`` (a DataLoader or iterable of ``x`` or ``(x, y, ...)``), in eval mode. Under
    ``torch.distributed`` give each process its own shard: the bounds are reduced over processes."""
    layers = select_layers(model) if layers is None else layers
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    metric = None
    with eval_mode(model):
        for batch in batches:
            x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
            outputs = layer_outputs(model, x, layers, reduce=neuron_values)
            if metric is None:
                metric = NeuronRange({n: o.shape[1] for n, o in outputs.items()}).to(device)
            metric.update(outputs)
    if metric is None:
        raise RobustlabError("no data to profile neurons on", "pass a non-empty training set")
    result = metric.compute()
    if not torch.isfinite(result["low"]).all():
        raise RobustlabError("some neurons were never profiled", "give every process at least one batch")
    return NeuronProfile(
        metric.layers, result["low"].cpu(), result["high"].cpu(), int(result["n_samples"]), weights_fingerprint(model)
    )


def section_index(
    values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KMNCov section (0..k-1) of each value and whether it lies in ``[low, high]``. Section ``i`` is
    ``[low + i w, low + (i+1) w)`` with ``w = (high - low) / k``, the last one closed at ``high``; a neuron
    with ``high == low`` has one point, counted as its first section."""
    v, lo, hi = values.double(), low.double(), high.double()
    inside = (v >= lo) & (v <= hi)
    width = (hi - lo) / k
    idx = torch.where(width > 0, torch.floor((v - lo) / torch.where(width > 0, width, 1.0)), 0.0)
    return idx.clamp(0, k - 1).long(), inside


def kmn_coverage(covered: torch.Tensor) -> torch.Tensor:
    """KMNCov, Eq. (1): covered sections over all ``k x |N|`` sections (``covered`` is ``(N, k)``)."""
    return ratio(covered.sum(), torch.tensor(covered.numel()), "KMNCov")


def nb_coverage(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """NBCov, Eq. (2): ``(|UpperCornerNeuron| + |LowerCornerNeuron|) / (2 |N|)``, each corner counted apart."""
    return ratio(upper.sum() + lower.sum(), torch.tensor(2 * upper.numel()), "NBCov")


def sna_coverage(upper: torch.Tensor) -> torch.Tensor:
    """SNACov, Eq. (3): ``|UpperCornerNeuron| / |N|``."""
    return ratio(upper.sum(), torch.tensor(upper.numel()), "SNACov")


def tkn_coverage(top: torch.Tensor) -> torch.Tensor:
    """TKNCov (DeepGauge Sec. 3.2): ``|union over inputs and layers of top_k(x, layer)| / |N|``."""
    return ratio(top.sum(), torch.tensor(top.numel()), "TKNCov")


class _Coverage(Metric):
    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, profile: NeuronProfile, **kwargs):
        super().__init__(**kwargs)
        self.layers = dict(profile.layers)
        self.register_buffer("low", profile.low.float().clone(), persistent=False)
        self.register_buffer("high", profile.high.float().clone(), persistent=False)
        if not (self.low <= self.high).all():
            raise RobustlabError(
                "the neuron profile has neurons with low > high (never profiled)",
                "profile the neurons on a non-empty training set",
            )

    def _flags(self, name: str, *shape: int) -> None:
        self.add_state(name, torch.zeros(*shape, dtype=torch.uint8), dist_reduce_fx="max")


class KMNCov(_Coverage):
    """k-multisection neuron coverage, Eq. (1): each neuron's profiled ``[low, high]`` is cut into ``k``
    equal sections (see :func:`section_index`); the share of sections hit by some input. Values outside
    ``[low, high]`` hit no section. State: ``(N, k)`` flags.

    ``update(outputs)`` takes :func:`layer_outputs` (raw or :func:`neuron_values`) of the profiled layers."""

    def __init__(self, profile: NeuronProfile, k: int = 10, **kwargs):
        super().__init__(profile, **kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RobustlabError(f"k must be an integer >= 1, got {k!r}", "set k (sections per neuron) to e.g. 10")
        self.k = k
        self._flags("covered", len(self.low), k)

    def update(self, outputs: Mapping[str, torch.Tensor]) -> None:
        idx, inside = section_index(_concat(outputs, self.layers), self.low, self.high, self.k)
        neuron = torch.arange(idx.shape[1], device=idx.device).expand_as(idx)
        flat = (neuron * self.k + idx)[inside]
        self.covered.view(-1)[flat] = 1

    def compute(self) -> torch.Tensor:
        return kmn_coverage(self.covered)


class NBCov(_Coverage):
    """Neuron boundary coverage, Eq. (2): neurons driven above ``high`` (upper corner) and below ``low``
    (lower corner), counted separately over ``2 |N|``. State: two ``(N,)`` flag vectors."""

    def __init__(self, profile: NeuronProfile, **kwargs):
        super().__init__(profile, **kwargs)
        self._flags("upper", len(self.low))
        self._flags("lower", len(self.low))

    def update(self, outputs: Mapping[str, torch.Tensor]) -> None:
        v = _concat(outputs, self.layers)
        self.upper |= (v > self.high).any(0).to(torch.uint8)
        self.lower |= (v < self.low).any(0).to(torch.uint8)

    def compute(self) -> torch.Tensor:
        return nb_coverage(self.upper, self.lower)


class SNACov(_Coverage):
    """Strong neuron activation coverage, Eq. (3): the share of neurons driven above their profiled
    ``high``. State: ``(N,)`` flags."""

    def __init__(self, profile: NeuronProfile, **kwargs):
        super().__init__(profile, **kwargs)
        self._flags("upper", len(self.low))

    def update(self, outputs: Mapping[str, torch.Tensor]) -> None:
        self.upper |= (_concat(outputs, self.layers) > self.high).any(0).to(torch.uint8)

    def compute(self) -> torch.Tensor:
        return sna_coverage(self.upper)


class TKNCov(Metric):
    """Top-k neuron coverage (DeepGauge): the share of neurons that are, for some input, among the ``k``
    largest of their own layer (all of a layer's neurons if it has at most ``k``). Needs only the layer
    sizes (a :class:`NeuronProfile` or ``{name: neurons}``). State: ``(N,)`` flags."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, layers: NeuronProfile | Mapping[str, int], k: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.layers = dict(layers.layers if isinstance(layers, NeuronProfile) else layers)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RobustlabError(f"k must be an integer >= 1, got {k!r}", "set k (top neurons per layer) to e.g. 2")
        self.k = k
        self.add_state("top", torch.zeros(sum(self.layers.values()), dtype=torch.uint8), dist_reduce_fx="max")

    def update(self, outputs: Mapping[str, torch.Tensor]) -> None:
        v = _concat(outputs, self.layers)
        start = 0
        for size in self.layers.values():
            if len(v):
                top = v[:, start : start + size].topk(min(self.k, size), dim=1).indices.unique()
                self.top[start + top] = 1
            start += size

    def compute(self) -> torch.Tensor:
        return tkn_coverage(self.top)
