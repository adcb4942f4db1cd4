"""Robustness curves (``suite=curves``): robust accuracy against eps and against the iteration count, and the two
checks they feed.

Carlini et al., "On Evaluating Adversarial Robustness" (2019), section 5.2-5.3: accuracy must fall monotonically
with the budget and reach chance at a large one; an attack whose accuracy still falls at its last iterations needs
more of them.
"""

import math

import torch
import torch.distributed as dist

from robustlab.attacks.base import Attack, innermost, lp_norm, variant
from robustlab.evaluation.attack_checks import norm_of
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.checks import entry, worst
from robustlab.evaluation.loop import summed
from robustlab.evaluation.record import BatchRecord

#: ``accuracy still falls with steps``: the last TAIL of the steps lowered robust accuracy by more than DROP.
TAIL, DROP = 0.2, 0.01
#: The split's first CURVE_PROBE samples are attacked at every budget, to compare each curve value with a separate
#: run's verdict.
CURVE_PROBE = 16
#: At most this many points of a steps curve (every step up to it).
STEP_POINTS = 51


def reduced(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` (a float64 vector) summed over all processes: :func:`~robustlab.evaluation.loop.summed` for
    tensors."""
    values = values.to(device=device, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
    return values


def budgets(eps: float, points: int, scale: float) -> list[float]:
    """``points`` budgets evenly from ``scale * eps / points`` to ``scale * eps`` (``eps`` itself among them when
    ``points / scale`` is an integer), after the clean point 0."""
    return [scale * eps * k / points for k in range(1, points + 1)]


def robust_accuracy(robust: torch.Tensor, total: float) -> list[float]:
    return [round(v / total, 6) if total else 0.0 for v in robust.tolist()]


class Curves(Evaluation):
    """``report.json["curves"]``: ``{"eps": {attack: curve}, "steps": {attack: curve}}``, and two entries appended
    to ``report.json["checks"]``.

    **eps** (robust accuracy against the budget, at 0 and :func:`budgets`: ``points`` budgets up to ``scale`` times
    the attack's own; the value at 0 is the clean accuracy):

    - an eps-bounded attack (PGD family, FGSM, APGD, AutoAttack, Square, ...) is rerun with its budget and step
      sizes scaled (:meth:`~robustlab.attacks.base.Attack.scale_budget`) to find, per clean-correct example, the
      first budget that breaks it: from the attack's own eps (the evaluation's run, free) up, one budget at a time,
      for the examples that run missed, and down for those it broke. PGD-family reruns stop each example at its
      first success (``early_stop``), so an example costs about one full run at the budget it resists plus short
      runs at those that break it (more on a flat curve, where it resists several). As the attacks are seeded per
      example, each value equals a separate evaluation at that budget wherever the attack is monotone in eps
      (breaks at a larger budget what it breaks at a smaller one); the split's first :data:`CURVE_PROBE` samples
      are attacked at every budget to measure where it is not (``probed``, ``disagree``).
    - a minimal-perturbation attack (:attr:`~robustlab.attacks.base.Attack.minimal_norm`: DeepFool, C&W, EAD) costs
      nothing more: an example is robust at budget ``e`` unless the attack succeeded with a perturbation of norm
      at most ``e`` (up to ``scale`` times the data's ``budgets[norm]``), exactly a separate run's verdict.

    **steps** (robust accuracy against the iteration count, for attacks that record each example's first
    successful step, :attr:`~robustlab.attacks.base.Attack.records_first_success`): read off the evaluation's run,
    free. For PGD with ``keep_successful`` each value equals a separate run of that many steps; for APGD (whose
    step-size schedule depends on the total) it is this run's progress.

    A randomised model's curves count the attack's own success decision (EOT), not the multi-draw scoring.

    Checks (Carlini et al. 2019, 5.2-5.3):

    - ``accuracy does not fall with eps``: a probed example's separate run at some budget disagrees with the curve
      (the attack is not monotone in eps: it breaks at a smaller budget what it misses at a larger one): warn, fail
      above 1% of the probed runs. At the largest budget, robust accuracy above chance and above half of that at the
      attack's own budget: warn (a sound model loses most of its robustness at twice the budget; masked gradients
      leave it flat); fail when it did not fall at all.
    - ``accuracy still falls with steps``: the last :data:`TAIL` of an attack's steps lowered its robust accuracy
      by more than :data:`DROP` (1 point): warn, fail above 5 points.
    """

    journaled = ("counts",)
    needs_final_iterates = False

    def __init__(
        self,
        attacks: list[str] | None = None,
        points: int = 8,
        scale: float = 2.0,
        budgets: dict[str, float] | None = None,
    ):
        super().__init__()
        self.only, self.points, self.scale = attacks, int(points), float(scale)
        self.norm_budgets = dict(budgets or {})

    def setup(self, context: Context) -> None:
        self.model, self.device = context.module, context.device
        self.num_classes = context.num_classes
        chosen = {k: a for k, a in context.attacks.items() if self.only is None or k in self.only}
        self.bounded, self.minimal, self.steps = {}, {}, {}
        for name, attack in chosen.items():
            inner = innermost(attack)
            if inner.minimal_norm and self.norm_budgets.get(inner.minimal_norm):
                self.minimal[name] = (
                    inner.minimal_norm,
                    budgets(self.norm_budgets[inner.minimal_norm], self.points, self.scale),
                )
            elif norm_of(inner) is not None and inner.eps > 0:
                self.bounded[name] = budgets(inner.eps, self.points, self.scale)
            if inner.records_first_success and isinstance(getattr(inner, "steps", None), int):
                self.steps[name] = self._step_grid(attack)
        self.attacks = chosen
        self.counts = {
            "examples": 0.0,
            "eps": {
                name: torch.zeros(self.points + 1, dtype=torch.float64) for name in {**self.bounded, **self.minimal}
            },
            "probed": {name: 0.0 for name in self.bounded},
            "disagree": {name: 0.0 for name in self.bounded},
            "steps": {name: torch.zeros(len(grid), dtype=torch.float64) for name, grid in self.steps.items()},
        }

    @staticmethod
    def _step_grid(attack: Attack) -> list[int]:
        inner = innermost(attack)
        total = inner.steps * getattr(inner, "restarts", 1)
        if total + 1 <= STEP_POINTS:
            return list(range(total + 1))
        return sorted({round(total * k / (STEP_POINTS - 1)) for k in range(STEP_POINTS)})

    def update(self, record: BatchRecord) -> None:
        correct = record.clean_pred == record.y
        self.counts["examples"] += float(len(record.y))
        for name, grid in self.bounded.items():
            if name in record.attacks:
                self._bounded(name, grid, record, correct)
        for name, (norm, grid) in self.minimal.items():
            if name in record.attacks:
                result = record.attacks[name]
                size = lp_norm(result.x_adv - record.x, norm)
                robust = [correct] + [correct & ~(result.success & (size <= e * (1 + 1e-6))) for e in grid]
                self.counts["eps"][name] += torch.stack(robust).sum(1).double().cpu()
        for name, grid in self.steps.items():
            result = record.attacks.get(name)
            if result is not None and result.iterations is not None:
                first = torch.where(result.success, result.iterations, torch.iinfo(torch.long).max)
                robust = torch.stack([correct & (first > t) for t in grid])
                self.counts["steps"][name] += robust.sum(1).double().cpu()

    def _bounded(self, name: str, grid: list[float], record: BatchRecord, correct: torch.Tensor) -> None:
        """Per clean-correct example, the first budget that breaks it: from the attack's own eps (the evaluation's
        run, free) up while the examples it missed still resist, and down while those it broke still break (PGD with
        ``early_stop``); the probed examples are also attacked at every other budget."""
        attack, result = self.attacks[name], record.attacks[name]
        eps, n, top = innermost(attack).eps, len(record.y), len(grid) + 1
        own = next((k for k, b in enumerate(grid, 1) if math.isclose(b, eps, rel_tol=1e-9)), None)
        verdicts = {k: torch.zeros(n, dtype=torch.bool, device=record.y.device) for k in range(1, top)}
        tried = {k: torch.zeros_like(v) for k, v in verdicts.items()}

        early = {"early_stop": True} if hasattr(innermost(attack), "early_stop") else {}

        def attack_at(k: int, rows: torch.Tensor) -> torch.Tensor:
            todo = rows[~tried[k][rows]]
            if len(todo):
                scaled = variant(attack, **early)
                scaled.scale_budget(grid[k - 1] / eps)
                target = None if result.target is None else result.target[todo]
                out = scaled.run(self.model, record.x[todo], record.y[todo], record.seeds[todo], target)
                verdicts[k][todo], tried[k][todo] = out.success, True
            return verdicts[k][rows]

        first = torch.full((n,), top, dtype=torch.long, device=record.y.device)  # top: no budget broke it
        if own is None:
            for k in range(1, top):
                rows = (correct & (first == top)).nonzero().squeeze(1)
                first[rows[attack_at(k, rows)]] = k
        else:
            verdicts[own], tried[own] = result.success & correct, correct.clone()
            first[correct & result.success] = own
            for k in range(own - 1, 0, -1):  # down from eps while the run's broken examples still break
                rows = (correct & (first == k + 1)).nonzero().squeeze(1)
                first[rows[attack_at(k, rows)]] = k
            for k in range(own + 1, top):  # up from eps while the examples it missed still resist
                rows = (correct & (first == top)).nonzero().squeeze(1)
                first[rows[attack_at(k, rows)]] = k
        self.counts["eps"][name] += (
            torch.stack([correct.sum()] + [(correct & (first > k)).sum() for k in range(1, top)]).double().cpu()
        )
        probe = (correct & (record.idx < CURVE_PROBE)).nonzero().squeeze(1)
        for k in range(1, top):
            separate = attack_at(k, probe)
            self.counts["probed"][name] += float(len(probe))
            self.counts["disagree"][name] += float(((first[probe] > k) == separate).sum())

    def results(self) -> dict:
        total = summed(self.counts["examples"], self.device)
        eps = {}
        for name, counts in self.counts["eps"].items():
            robust = reduced(counts, self.device)
            if name in self.bounded:
                grid, norm = self.bounded[name], norm_of(innermost(self.attacks[name]))
                method, budget = "rerun", innermost(self.attacks[name]).eps
            else:
                norm, grid = self.minimal[name]
                method, budget = "minimal norm", self.norm_budgets[norm]
            eps[name] = {
                "norm": norm,
                "budget": budget,
                "method": method,
                "eps": [0.0, *grid],
                "robust_accuracy": robust_accuracy(robust, total),
            }
            if name in self.bounded:
                for key in ("probed", "disagree"):
                    eps[name][key] = int(summed(self.counts[key][name], self.device))
        steps = {
            name: {
                "steps": grid,
                "robust_accuracy": robust_accuracy(reduced(self.counts["steps"][name], self.device), total),
            }
            for name, grid in self.steps.items()
        }
        return {"eps": eps, "steps": steps, "examples": int(total)}

    def checks(self, results: dict) -> list[dict]:
        return [self._eps_check(results), self._steps_check(results)]

    def _eps_check(self, results: dict) -> dict:
        name, parts, status = "accuracy does not fall with eps", [], "pass"
        chance = 1 / self.num_classes if self.num_classes else 0.0
        for label, curve in results["eps"].items():
            if curve["method"] != "rerun":
                continue
            acc, grid = curve["robust_accuracy"], curve["eps"]
            at_budget = acc[min(range(len(grid)), key=lambda k: abs(grid[k] - curve["budget"]))]
            last, s = acc[-1], "pass"
            if curve["disagree"]:
                s = "fail" if curve["disagree"] / curve["probed"] > 0.01 else "warn"
            if last > chance and last > 0.5 * at_budget:
                s = worst(s, "fail" if last >= at_budget else "warn")
            status = worst(status, s)
            parts.append(
                f"{label}: robust accuracy {at_budget:.4f} at eps {curve['budget']:.4g}, {last:.4f} at {grid[-1]:.4g} "
                f"(chance {chance:.3g}); {curve['disagree']} of {curve['probed']} separate runs of probed "
                "examples disagree with the curve"
            )
        if not parts:
            return entry(name, "pass", "skipped: no eps-bounded attack to draw a curve of")
        fix = (
            "accuracy must fall with eps and reach chance at a large one: the attack fails (masked gradients, too "
            "few steps); use BPDA/EOT, more steps, or black-box attacks, and report the worst case over budgets"
        )
        return entry(name, status, "; ".join(parts), fix if status != "pass" else "")

    def _steps_check(self, results: dict) -> dict:
        name, parts, status = "accuracy still falls with steps", [], "pass"
        for label, curve in results["steps"].items():
            acc, grid = curve["robust_accuracy"], curve["steps"]
            cut = grid[-1] * (1 - TAIL)
            before = acc[max(k for k, t in enumerate(grid) if t <= cut)]
            drop = before - acc[-1]
            s = "fail" if drop > 5 * DROP else "warn" if drop > DROP else "pass"
            status = worst(status, s)
            parts.append(f"{label}: robust accuracy {before:.4f} at step {round(cut)}, {acc[-1]:.4f} at {grid[-1]}")
        if not parts:
            return entry(name, "pass", "skipped: no attack records its first successful step")
        fix = "run more steps until robust accuracy stops falling (or use APGD/AutoAttack)"
        return entry(name, status, "; ".join(parts), fix if status != "pass" else "")

    def summary(self, results: dict) -> str:
        parts = [
            f"{label} {curve['robust_accuracy'][-1]:.4f} at eps {curve['eps'][-1]:.4g}"
            for label, curve in results["eps"].items()
        ]
        return "curves: " + (", ".join(parts) if parts else f"steps only ({', '.join(results['steps'])})")
