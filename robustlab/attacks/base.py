"""The attack interface: ``attack(model, x, y, seeds=None, target=None) -> x_adv`` on [0,1] images."""

import copy
import math
import time
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.rng import Streams
from robustlab.success import goal_met
from robustlab.utils import synchronize

NORMS = ("linf", "l2", "l1")
#: How a targeted attack picks targets when none are given (DEEPSEC protocol).
TARGET_RULES = ("random", "least_likely")
#: Images per forward pass when a black-box step queries many perturbed copies of each example.
MAX_BATCH = 4096


def check_images(x: torch.Tensor, who: str) -> None:
    """Raise a one-line error unless ``x`` is a finite float batch in [0,1]."""
    if not torch.is_floating_point(x):
        raise RobustlabError(f"{who} got {x.dtype} images", "pass float images in [0,1]")
    if not torch.isfinite(x).all():
        raise RobustlabError(f"{who} got images containing NaN or inf", "clean the input batch before attacking it")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise RobustlabError(
            f"{who} got images outside [0,1] (min {lo:.3g}, max {hi:.3g})",
            "feed unnormalised [0,1] images and put normalisation inside the model",
        )


def check_norm(norm: str, allowed: tuple[str, ...] = NORMS) -> str:
    if norm not in allowed:
        raise RobustlabError(f"unknown norm {norm!r}", f"use one of {', '.join(allowed)}")
    return norm


def check_eps(eps: float, name: str = "eps") -> float:
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise RobustlabError(f"{name} must be a finite number >= 0, got {eps!r}", f"set a non-negative {name}")
    return float(eps)


def check_count(n: int, name: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise RobustlabError(f"{name} must be an integer >= {minimum}, got {n!r}", f"set {name} to at least {minimum}")
    return n


def random_like(x: torch.Tensor, seeds: torch.Tensor | None, kind: str = "uniform") -> torch.Tensor:
    """Uniform [0,1), standard normal or standard Laplace noise shaped like ``x``.

    With ``seeds`` (one integer per example) each example's noise depends only on its seed, so
    results do not change with batch size, order, process count or device.
    """
    if kind == "laplace":
        u = random_like(x, seeds) - 0.5
        return -u.sign() * (1 - 2 * u.abs()).clamp_min(1e-12).log()
    return Streams(seeds, len(x), x.device).draw(kind, x.shape[1:], x)


def input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient w.r.t. ``x`` only (parameter grads untouched) of the objective an attack ascends,
    and the logits: the summed cross-entropy on ``y``, or minus the one on ``target`` if given. A model whose
    output does not depend on ``x`` through the graph (a detached input) gives a zero gradient, as masked
    gradients do, instead of an error."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = (
        F.cross_entropy(logits, y, reduction="sum")
        if target is None
        else -F.cross_entropy(logits, target, reduction="sum")
    )
    if not loss.requires_grad:
        return torch.zeros_like(x), logits.detach()
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True, materialize_grads=True)
    return grad, logits.detach()


def lp_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of a batch, shape ``(B,)``."""
    flat = v.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    return flat.abs().sum(1) if norm == "l1" else flat.norm(p=2, dim=1)


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` vector to broadcast against a batch shaped like ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def margin(logits: torch.Tensor, label: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Carlini-Wagner margin, per example: ``max_{i!=t} Z_i - Z_t`` when targeted (``label`` = t),
    ``Z_y - max_{i!=y} Z_i`` when untargeted; negative means the attack's goal is met."""
    own = logits.gather(1, label[:, None]).squeeze(1)
    other = logits.scatter(1, label[:, None], float("-inf")).amax(1)
    return other - own if targeted else own - other


def query(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``x`` without gradients, in chunks of at most :data:`MAX_BATCH` images."""
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in x.split(MAX_BATCH)])


def retire(
    attack: "Attack",
    model: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    active: torch.Tensor,
    first: torch.Tensor,
    queries: torch.Tensor,
    t: int,
) -> torch.Tensor:
    """The early stop of the black-box attacks: query the ``active`` examples' iterates once (counted in
    ``queries``, their logits kept by ``attack``); those meeting the goal get ``first = t`` and leave
    ``active``. Returns the indices still active."""
    idx = active.nonzero().squeeze(1)
    logits = query(model, x_adv[idx])
    attack.keep_logits(idx, logits)
    met = goal_met(logits.argmax(1), y[idx], None if target is None else target[idx])
    queries[idx] += 1
    first[idx[met]] = t
    active[idx[met]] = False
    return idx[~met]


def choose_targets(logits: torch.Tensor, y: torch.Tensor, rule: str, seeds: torch.Tensor | None) -> torch.Tensor:
    """DEEPSEC's targets: a uniformly random wrong class (``seeds`` make each example's draw depend
    only on its seed) or the least-likely class of the clean logits."""
    if rule == "least_likely":
        return logits.argmin(1)
    classes = logits.shape[1]
    offset = Streams(seeds, len(y), y.device, salt=0x5EED).randint(classes - 1, 1)[:, 0]
    return (y + 1 + offset) % classes


@dataclass
class AttackResult:
    """What one attack call computed, per example: the returned images ``x_adv`` (detached, in the eps
    ball and [0,1]), the model's ``logits`` on them, ``success`` (:func:`~robustlab.success.goal_met` on the
    returned image, or the attack's own stricter rule), the ``target`` of a targeted attack, and the
    attack's ``iterations`` and ``queries`` (``None`` where it does not count them), the ``seconds`` the call
    took (with queued device work waited for, so it is billed to the attack that queued it) without its one-off
    fitting (a UAP fitted on first use), whose seconds are ``setup_seconds``; a transfer attack's success on its
    surrogate is ``surrogate_success``. Under an :class:`OutputWatch`, ``outputs`` is ``(rows, {form: {layer:
    output}})``: the layer outputs, for the rows that have them, of the passes whose logits the attack returns."""

    x_adv: torch.Tensor
    logits: torch.Tensor
    success: torch.Tensor
    target: torch.Tensor | None = None
    iterations: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    seconds: float = 0.0
    setup_seconds: float = 0.0
    surrogate_success: torch.Tensor | None = None
    outputs: tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]] | None = None


class OutputWatch(Protocol):
    """The evaluation's view of the latest forward pass (:meth:`~robustlab.evaluation.record.LayerRequests.watching`):
    ``take(logits)`` gives that pass's requested layer outputs ``{form: {layer: output}}`` if ``logits`` are its
    output, else ``None``."""

    def take(self, logits: torch.Tensor) -> dict | None: ...


class _Logits:
    """The logits of each example's returned image, filled by the attack as it computes them, and, under an
    :class:`OutputWatch`, the layer outputs of the same passes (``captured`` marks the rows that have them).

    The first pass over the whole batch in order is kept as it is, not copied (``base``); while it is, the rows of
    later passes wait in ``pending`` (copies of the rows kept, or a whole pass) and are written into it when the
    attack is done, so no write touches a tensor the attack may still differentiate through. Where they would exceed
    a batch's worth of rows, ``base`` is copied (owned) and they are written at once, as are all rows once it is
    owned or where no pass was kept."""

    def __init__(self, n: int, watch: OutputWatch | None = None):
        self.value: torch.Tensor | None = None
        self.known: torch.Tensor | None = None
        self.n, self.watch = n, watch
        self.base: dict[str, dict[str, torch.Tensor]] | None = None
        self.versions: list[tuple[torch.Tensor, int]] | None = None  # of an adopted base, until it is owned
        self.pending: list[tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]] = []
        self.captured: torch.Tensor | None = None

    def put(self, rows: torch.Tensor, logits: torch.Tensor, among: torch.Tensor | None = None) -> None:
        kept = logits if among is None else logits[among]
        if self.value is None:
            self.value = kept.new_zeros(self.n, kept.shape[1])
            self.known = torch.zeros(self.n, dtype=torch.bool, device=kept.device)
        self.value[rows] = kept.detach().to(self.value.dtype)
        self.known[rows] = True
        if self.watch is not None:
            self._capture(rows, among, logits)

    def _in_order(self, rows: torch.Tensor, logits: torch.Tensor, among: torch.Tensor | None) -> bool:
        """Whether the pass is of the whole batch, row ``i`` being example ``i`` for every row kept."""
        if len(logits) != self.n:
            return False
        if among is not None:
            return among is rows or (among.dtype == rows.dtype and torch.equal(among, rows))
        if rows.dtype == torch.bool:
            return bool(rows.all())
        return torch.equal(rows, torch.arange(self.n, device=rows.device))

    def _capture(self, rows: torch.Tensor, among: torch.Tensor | None, logits: torch.Tensor) -> None:
        if self.captured is None:
            self.captured = torch.zeros(self.n, dtype=torch.bool, device=logits.device)
        taken = self.watch.take(logits)
        if taken is None:
            self.captured[rows] = False
            return
        self.captured[rows] = True
        if self.base is None and self._in_order(rows, logits, among):
            self.base = taken
            self.versions = [(t, t._version) for per in taken.values() for t in per.values()]
            return
        part = taken if among is None else {f: {k: t[among] for k, t in per.items()} for f, per in taken.items()}
        self.pending.append((rows, part))
        if (
            self.versions is None
            or sum(int(r.sum()) if r.dtype == torch.bool else len(r) for r, _ in self.pending) > self.n
        ):
            self._write(own=True)

    def _write(self, own: bool) -> None:
        """Write ``pending`` into ``base`` (allocated if none; copied first where ``own`` and it is adopted)."""
        if self.versions is not None and any(t._version != v for t, v in self.versions):
            self.base, self.versions, self.pending = None, None, []  # changed since its pass: every row recomputed
            self.captured.zero_()
        if self.base is None and self.pending:
            self.base = {
                form: {name: t.new_zeros(self.n, *t.shape[1:]) for name, t in per.items()}
                for form, per in self.pending[0][1].items()
            }
        elif own and self.versions is not None:
            self.base = {form: {name: t.clone() for name, t in per.items()} for form, per in self.base.items()}
        if own:
            self.versions = None
        for rows, part in self.pending:
            for form, per in part.items():
                for name, t in per.items():
                    self.base[form][name][rows] = t
        self.pending = []

    def captured_outputs(self) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]] | None:
        """``(rows that have them, {form: {layer: output}})``, or ``None`` where no row does; once the attack is
        done."""
        if self.captured is None or (self.base is None and not self.pending):
            return None
        self._write(own=False)
        if self.base is None or not self.captured.any():
            return None
        return self.captured, self.base

    def complete(self, model: nn.Module, x_adv: torch.Tensor) -> torch.Tensor:
        """All rows: one forward pass, without gradients, of the images whose logits are still unknown."""
        missing = (
            torch.arange(self.n, device=x_adv.device) if self.known is None else (~self.known).nonzero().squeeze(1)
        )
        if len(missing):
            with torch.no_grad():
                self.put(missing, model(x_adv[missing]))
        return self.value


class Attack:
    """Base class. Subclasses implement :meth:`perturb`; :meth:`run` adds checks and bookkeeping and returns an
    :class:`AttackResult`; ``attack(model, x, y)`` returns its ``x_adv``.

    After a call:

    * ``last_success``: bool per example; the returned image is misclassified (untargeted) or
      classified as its target (targeted). ``perturb`` may set it; otherwise it is read off ``last_logits``.
    * ``last_logits``: the model's logits on the returned images. ``perturb`` hands over those it computed
      (:meth:`keep_logits`); the others cost one forward pass, so no image is sent twice to learn them.
    * ``last_target``: the targets used by a targeted attack (``None`` for untargeted ones).
    * ``last_iterations``: per example iteration counts of iterative attacks (see each class).
    * ``last_queries``: per example model queries (forward passes on that example) of black-box attacks.

    Targeted attacks (``targeted`` true) take ``target=`` (int or one class per example); without
    it they choose targets by ``target_rule`` following DEEPSEC: ``"random"`` (a uniformly random
    wrong class, seeded per example by ``seeds``) or ``"least_likely"`` (the LLC family).
    Minimal-perturbation attacks set ``clean_on_failure`` and return the clean input wherever they fail.
    ``clean_logits`` (the model's logits on ``x``, when the caller has them) saves the attacks that need the
    clean prediction a forward pass (:meth:`predict_clean`).

    Attacks never change the model's train/eval mode or its parameter gradients: gradients are
    taken with ``torch.autograd.grad`` on the input only.
    """

    name = "attack"
    #: "whitebox" (uses gradients) or "blackbox"; decides the report key of later metrics.
    kind = "whitebox"
    targeted = False
    target_rule = "random"
    clean_on_failure = False
    #: The input-space sizes a training budget schedule scales (:meth:`scale_budget`).
    budget_fields: tuple[str, ...] = ("eps", "step")
    #: The norm a minimal-perturbation attack minimises (DeepFool, C&W): one run gives robust accuracy at every
    #: budget of that norm (the eps curve of :mod:`robustlab.evaluation.curves`). None for eps-bounded attacks.
    minimal_norm: str | None = None
    #: ``last_iterations`` is each example's first successful step of one run (the steps curve); False where it
    #: counts iterations otherwise (over targets, restarts or a binary search).
    records_first_success = False

    def __init__(self):
        self.last_success: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None
        self.last_target: torch.Tensor | None = None
        self.last_iterations: torch.Tensor | None = None
        self.last_queries: torch.Tensor | None = None
        self.last_surrogate_success: torch.Tensor | None = None
        self.last_setup_seconds = 0.0
        self._clean: torch.Tensor | None = None
        self._logits: _Logits | None = None

    @property
    def label(self) -> str:
        """The attack's name in reports and AutoAttack's stage list."""
        return self.name

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        seeds: torch.Tensor | None,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def reset(self, stage: str) -> None:
        """Called by the evaluation loop when a stage starts ("validate" every validation epoch, "test"): an
        attack that fits itself to the model (UAP) refits for this stage. No-op here."""

    def keep_logits(self, rows: torch.Tensor, logits: torch.Tensor, among: torch.Tensor | None = None) -> None:
        """Inside :meth:`perturb`: ``logits`` (its rows ``among``, a mask or indices, if given) are the model's on
        the images returned for ``rows`` (indices or a mask into the batch). Passing a forward pass's output itself
        with ``among``, not a slice of it, lets an evaluation keep that pass's layer outputs too."""
        self._logits.put(rows, logits, among)

    def predict_clean(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's logits on the clean batch ``x``: the caller's ``clean_logits`` if given, else one
        forward pass without gradients."""
        if self._clean is not None and len(self._clean) == len(x):
            return self._clean
        with torch.no_grad():
            return model(x)

    def scale_budget(self, fraction: float) -> None:
        """Set every field of :attr:`budget_fields` to ``fraction`` of its configured value (its value at the
        first call): the schedule of adversarial training."""
        full = self.__dict__.setdefault(
            "_budget", {f: getattr(self, f) for f in self.budget_fields if hasattr(self, f)}
        )
        for field, value in full.items():
            setattr(self, field, value * fraction)

    def _targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds, target) -> torch.Tensor:
        who = type(self).__name__
        logits = self.predict_clean(model, x)
        classes = logits.shape[1]
        if classes < 2:
            raise RobustlabError(
                f"{who} is targeted but the model has {classes} class", "use an untargeted attack on a one-class model"
            )
        if target is None:
            if self.target_rule not in TARGET_RULES:
                raise RobustlabError(
                    f"unknown target rule {self.target_rule!r}", f"use one of {', '.join(TARGET_RULES)}"
                )
            return choose_targets(logits, y, self.target_rule, seeds)
        target = torch.as_tensor(target, device=x.device).long().expand(len(x)).clone()
        if target.min() < 0 or target.max() >= classes:
            raise RobustlabError(f"{who} got targets outside [0, {classes})", f"pass class indices below {classes}")
        return target

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        seeds: torch.Tensor | None = None,
        target: torch.Tensor | int | None = None,
        clean_logits: torch.Tensor | None = None,
        watch: OutputWatch | None = None,
    ) -> AttackResult:
        """Attack a batch of [0,1] images ``x`` with labels ``y``; see the class docstring.

        ``seeds`` (optional, one int per example) makes random starts and random targets
        reproducible per example; ``target`` fixes the targets of a targeted attack. Under ``watch``, the result's
        ``outputs`` hold the layer outputs of the passes whose logits it returns.
        """
        who = type(self).__name__
        if torch.is_inference_mode_enabled():
            raise RobustlabError(
                f"{who} was called under torch.inference_mode(), where gradients cannot be computed",
                "use Trainer(inference_mode=False) or call it outside inference mode",
            )
        check_images(x, who)
        if target is not None and not self.targeted:
            raise RobustlabError(f"{who} is untargeted but got target=", "drop target or set targeted=True")
        x, y = x.detach(), y.to(x.device)
        self.last_success = self.last_logits = self.last_target = self.last_iterations = self.last_queries = None
        self.last_surrogate_success = None
        self.last_setup_seconds = 0.0
        self._clean, self._logits = clean_logits, _Logits(len(x), watch)
        synchronize(x.device)
        start = time.perf_counter()
        try:
            with torch.enable_grad():
                if self.targeted:
                    self.last_target = self._targets(model, x, y, seeds, target)
                x_adv = self.perturb(model, x, y, seeds, self.last_target).detach()
            if self.last_success is None:
                logits = self._logits.complete(model, x_adv)
                self.last_success = goal_met(logits.argmax(1), y, self.last_target)
            if self.clean_on_failure and not self.last_success.all():
                failed = (~self.last_success).nonzero().squeeze(1)
                x_adv = x_adv.clone()
                x_adv[failed] = x[failed]
                self._logits.put(failed, self.predict_clean(model, x)[failed])
            self.last_logits = self._logits.complete(model, x_adv)
            outputs = self._logits.captured_outputs()
        finally:
            self._clean, self._logits = None, None
        synchronize(x.device)
        seconds = time.perf_counter() - start
        return AttackResult(
            x_adv,
            self.last_logits,
            self.last_success,
            self.last_target,
            self.last_iterations,
            self.last_queries,
            seconds - self.last_setup_seconds,
            self.last_setup_seconds,
            self.last_surrogate_success,
            outputs,
        )

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        seeds: torch.Tensor | None = None,
        target: torch.Tensor | int | None = None,
        clean_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`run`'s adversarial images: detached, in the eps ball and [0,1]."""
        return self.run(model, x, y, seeds, target, clean_logits).x_adv

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith(("last_", "_")))
        return f"{type(self).__name__}({args})"


def innermost(attack: Attack) -> Attack:
    """The attack inside any EOT, BPDA or transfer wrappers (:class:`Wrapper`)."""
    while hasattr(attack, "attack"):
        attack = attack.attack
    return attack


def variant(attack: Attack, **fields) -> Attack:
    """A copy of ``attack`` (wrappers copied, not the models they hold) whose innermost attack has ``fields``."""
    top = node = copy.copy(attack)
    while hasattr(node, "attack"):
        node.attack = copy.copy(node.attack)
        node = node.attack
    for key, value in fields.items():
        setattr(node, key, value)
    return top


class Wrapper(Attack):
    """Base of attacks that run another ``attack`` (EOT, BPDA, transfer): its kind, targeting and
    failure rule are the inner attack's unless a subclass sets its own."""

    def __init__(self, attack: Attack):
        super().__init__()
        if not isinstance(attack, Attack):
            raise RobustlabError(
                f"{type(self).__name__} wraps an attack, got {type(attack).__name__}", "pass e.g. PGD(...) as attack"
            )
        self.attack = attack

    @property
    def kind(self) -> str:
        return self.attack.kind

    @property
    def targeted(self) -> bool:
        return self.attack.targeted

    @property
    def target_rule(self) -> str:
        return self.attack.target_rule

    @property
    def clean_on_failure(self) -> bool:
        return self.attack.clean_on_failure

    def reset(self, stage: str) -> None:
        self.attack.reset(stage)

    def scale_budget(self, fraction: float) -> None:
        self.attack.scale_budget(fraction)
