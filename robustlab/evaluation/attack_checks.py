"""Costly evaluation checks (``suite=checks``): each white-box attack rerun on the split's first
:data:`PROBE` test samples, to learn whether it failed rather than the model resisted.

Sources: "Indicators of Attack Failure" (Pintor et al., NeurIPS 2022: silent success, incomplete optimisation,
unconstrained attack failure) and "On Evaluating Adversarial Robustness" (Carlini et al. 2019, sections 4-5: more
iterations and restarts, unbounded budgets, random noise). Every count is a sum over processes, so the verdicts
are the same on one process or eight.
"""

import math
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import FGSM
from robustlab.attacks.adaptive import straight_through
from robustlab.attacks.apgd import salted
from robustlab.attacks.base import Attack, innermost, input_gradient, lp_norm, per_example, random_like, variant
from robustlab.evaluation.checks import entry, worst
from robustlab.evaluation.loop import summed
from robustlab.evaluation.record import BatchRecord
from robustlab.success import goal_met

#: The costly checks rerun the attacks on the split's first PROBE samples (by index, wherever they fall).
PROBE = 64
#: Uniform-noise draws per example in ``random noise beats the attack``.
NOISE_DRAWS = 16
#: Salts of the rerun's second random start and of the noise draws (apart from the attacks' streams).
RESTART_SALT, NOISE_SALT = 0x2E57A27, 0x401CE
#: ``zero or NaN gradients along the path``: the loss gradient is taken at this many iterates, evenly spaced.
PATH_GRADIENTS = 4
#: ``incomplete optimisation``: the final TAIL of the path improved the best loss by more than RISE of its total rise.
TAIL, RISE = 0.2, 0.05
COUNTS = (
    "more_tried",
    "more_broken",
    "unbounded_tried",
    "unbounded_missed",
    "noise_tried",
    "noise_broken",
    "path_examples",
    "silent",
    "path_robust",
    "improving",
    "bad_gradients",
)


def norm_of(attack: Attack) -> str | None:
    """The norm of the ball an eps-bounded attack stays in ("linf" for the FGSM family), else None."""
    if not isinstance(getattr(attack, "eps", None), (int, float)):
        return None
    return getattr(attack, "norm", "linf" if isinstance(attack, FGSM) else None)


def unbounded_eps(norm: str, shape: torch.Size) -> float:
    """A budget covering the whole [0,1] box: 1 in Linf, the box's diagonal sqrt(d) in L2."""
    return 1.0 if norm == "linf" else math.sqrt(math.prod(shape[1:]))


def ball_noise(x: torch.Tensor, eps: float, norm: str, seeds: torch.Tensor) -> torch.Tensor:
    """Per-example seeded noise of budget ``eps``: uniform in the Linf cube, or on the L2 sphere."""
    if norm == "linf":
        return (2 * random_like(x, seeds) - 1) * eps
    direction = random_like(x, seeds, "normal")
    return direction * eps / per_example(lp_norm(direction, "l2").clamp_min(1e-12), x)


@contextmanager
def tracing(model: nn.Module, n: int, inputs: dict[int, torch.Tensor] | None = None, at: tuple[int, ...] = ()):
    """Yields the list of the model's outputs (detached) on every forward call of ``n`` examples inside the block:
    the iterates of an attack's path. The inputs of the calls numbered ``at`` go into ``inputs``."""
    path: list[torch.Tensor] = []

    def keep(_module, args, out):
        if isinstance(out, torch.Tensor) and out.dim() == 2 and len(out) == n:
            if inputs is not None and len(path) in at:
                inputs[len(path)] = args[0].detach()
            path.append(out.detach())

    handle = model.register_forward_hook(keep)
    try:
        yield path
    finally:
        handle.remove()


def path_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """``(T, n)``: the attack's objective along its path (cross-entropy of the label; minus that of the target)."""
    flat = logits.flatten(0, 1)
    if target is None:
        return F.cross_entropy(flat, y.repeat(len(logits)), reduction="none").view(len(logits), -1)
    return -F.cross_entropy(flat, target.repeat(len(logits)), reduction="none").view(len(logits), -1)


def improving(loss: torch.Tensor) -> torch.Tensor:
    """Per example: the best loss of the path's final :data:`TAIL` beats the best before it by more than
    :data:`RISE` of the whole path's rise (Pintor et al.'s incomplete-optimisation indicator, on the best loss)."""
    tail = max(1, round(TAIL * len(loss)))
    before, after = loss[:-tail].amax(0), loss[-tail:].amax(0)
    rise = torch.maximum(before, after) - loss[0]
    return (after - before) > RISE * rise.clamp_min(1e-6)


class AttackProbe:
    """The per-attack counts of the costly checks, accumulated batch by batch (see :class:`Checks`)."""

    def __init__(self, model: nn.Module, attacks: dict[str, Attack], randomized: bool, preprocessors=()):
        self.model, self.attacks, self.randomized, self.preprocessors = model, attacks, randomized, preprocessors
        self.counts = {name: dict.fromkeys(COUNTS, 0.0) for name, a in attacks.items() if self.applies(a)}
        self.seconds = 0.0

    @staticmethod
    def applies(attack: Attack) -> bool:
        return attack.kind == "whitebox" and norm_of(innermost(attack)) in ("linf", "l2")

    def update(self, record: BatchRecord) -> None:
        start = time.perf_counter()
        rows = (record.idx < PROBE).nonzero().squeeze(1)
        if len(rows):
            for name in self.counts:
                if name in record.attacks:
                    self._attack(name, record, rows)
        self.seconds += time.perf_counter() - start

    def _attack(self, name: str, record: BatchRecord, rows: torch.Tensor) -> None:
        attack, result, c = self.attacks[name], record.attacks[name], self.counts[name]
        inner = innermost(attack)
        correct = rows[record.clean_pred[rows] == record.y[rows]]
        x, y, seeds = record.x[correct], record.y[correct], record.seeds[correct]
        target = None if result.target is None else result.target[correct]
        broken = result.success[correct]
        if not len(correct):
            return
        iterative = isinstance(getattr(inner, "steps", None), int) and inner.steps > 0
        if iterative:
            more = variant(attack, steps=2 * inner.steps).run(self.model, x, y, salted(seeds, RESTART_SALT), target)
            c["more_tried"] += float(len(x))
            c["more_broken"] += float((~broken & more.success).sum())
            if not self.randomized:
                at = tuple(round(inner.steps * k / (PATH_GRADIENTS - 1)) for k in range(PATH_GRADIENTS))
                inputs: dict[int, torch.Tensor] = {}
                whole = variant(attack, early_stop=False) if hasattr(inner, "early_stop") else attack
                with tracing(self.model, len(x), inputs, at) as path:  # every step, on the whole probe batch
                    again = whole.run(self.model, x, y, seeds, target)
                if len(path) >= 5:
                    c["bad_gradients"] += float(self._bad_gradients(inputs.values(), y, target).sum())
                    logits = torch.stack(path)
                    adversarial = goal_met(logits.argmax(2), y, target).any(0)
                    with torch.no_grad():  # the returned point as the model sees it, not as the attack claims
                        missed = ~goal_met(self.model(again.x_adv).argmax(1), y, target)
                    c["path_examples"] += float(len(x))
                    c["silent"] += float((adversarial & missed).sum())
                    c["path_robust"] += float(missed.sum())
                    c["improving"] += float((improving(path_loss(logits, y, target)) & missed).sum())
        robust = (~broken).nonzero().squeeze(1)
        if not len(robust):
            return
        x, y, seeds = x[robust], y[robust], seeds[robust]
        target = None if target is None else target[robust]
        norm = norm_of(inner)
        if iterative and inner.eps > 0:
            free = variant(attack)
            free.scale_budget(unbounded_eps(norm, x.shape) / inner.eps)
            free = free.run(self.model, x, y, seeds, target)
            c["unbounded_tried"] += float(len(x))
            c["unbounded_missed"] += float((~free.success).sum())
        if not self.randomized:
            fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            with torch.no_grad():
                for draw in range(NOISE_DRAWS):
                    noise = ball_noise(x, inner.eps, norm, salted(seeds, NOISE_SALT + draw))
                    fooled |= goal_met(self.model((x + noise).clamp(0, 1)).argmax(1), y, target)
            c["noise_tried"] += float(len(x))
            c["noise_broken"] += float(fooled.sum())

    def _bad_gradients(self, iterates, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per example: the attack's loss gradient is all zero or not finite at one of the ``iterates``."""
        bad = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        for x_t in iterates:
            with torch.enable_grad(), straight_through(self.preprocessors):
                grad = input_gradient(self.model, x_t, y, target)[0].flatten(1)
            bad |= (grad == 0).all(1) | ~grad.isfinite().all(1)
        return bad

    def results(self, device: torch.device) -> list[dict]:
        counts = {name: {k: summed(v, device) for k, v in c.items()} for name, c in self.counts.items()}
        seconds = summed(self.seconds, device)
        checks = [
            self._verdict(
                "more steps or restarts help",
                counts,
                "more_tried",
                "more_broken",
                lambda n, k, c: "fail" if k / n > 0.01 and k >= 3 else "warn" if k else "pass",
                "{k} of {n} clean-correct probed examples fell to 2x the steps with a second random start",
                "run more steps and restarts (report the strongest), or use APGD/AutoAttack, until accuracy stops "
                "falling",
            ),
            self._verdict(
                "unconstrained attack fails",
                counts,
                "unbounded_tried",
                "unbounded_missed",
                lambda n, k, c: "fail" if k else "pass",
                "{k} of {n} examples the attack missed also resist it with eps covering the whole image box",
                "an attack must reach 100% success without a budget: the gradients are masked or the attack is "
                "broken; use BPDA/EOT, another loss, or a black-box attack",
            ),
            self._verdict(
                "random noise beats the attack",
                counts,
                "noise_tried",
                "noise_broken",
                lambda n, k, c: "fail" if k / max(n, 1) >= 0.05 else "warn" if k else "pass",
                "{k} of {n} examples the attack missed were fooled by uniform noise of the same budget "
                f"({NOISE_DRAWS} draws)",
                "the attack's gradients mislead it: check for masking (BPDA/EOT) and confirm with black-box attacks",
            ),
            self._verdict(
                "silent success",
                counts,
                "path_examples",
                "silent",
                lambda n, k, c: "fail" if k else "pass",
                "{k} of {n} traced examples had an adversarial iterate on the path but not as the returned point",
                "return the best iterate (keep_successful=True) or check the attack's success rule",
            ),
            self._verdict(
                "zero or NaN gradients along the path",
                counts,
                "path_examples",
                "bad_gradients",
                lambda n, k, c: "fail" if k / n >= 0.1 else "warn" if k else "pass",
                "{k} of {n} traced examples had an all-zero or non-finite loss gradient at one of "
                f"{PATH_GRADIENTS} iterates of the path",
                "gradients vanish on the way (saturated or detached layers, quantisation): use BPDA, a margin "
                "(DLR/CW) loss, and confirm with black-box attacks",
            ),
            self._verdict(
                "incomplete optimisation",
                counts,
                "path_robust",
                "improving",
                lambda n, k, c: "fail" if k / n >= 0.1 and k >= 3 and c["more_broken"] else "warn" if k else "pass",
                "{k} of {n} examples the traced attack missed still improved their loss over the last "
                f"{TAIL:.0%} of the steps",
                "run more steps (or a larger step) until the loss stops improving; it fails only where more steps "
                "also broke examples (a loss still rising on points that stay robust costs no accuracy)",
            ),
        ]
        for check in checks:
            check["seconds"] = round(seconds, 3)
        return checks

    def _verdict(self, name, counts, tried, hit, status, evidence, fix) -> dict:
        parts, overall = [], "pass"
        for label, c in counts.items():
            n, k = int(c[tried]), int(c[hit])
            if n == 0:
                continue
            s = status(n, k, c)
            overall = worst(overall, s)
            parts.append(f"{label}: " + evidence.format(n=n, k=k))
        if not parts:
            return entry(name, "pass", "skipped: no eps-bounded white-box attack it applies to (or a randomised model)")
        return entry(name, overall, "; ".join(parts), fix if overall != "pass" else "")
