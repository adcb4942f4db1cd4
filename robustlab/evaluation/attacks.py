"""Attack evaluation: clean accuracy, per-attack robust accuracy, MR, generation time and attack-utility
metrics, and the per-example worst case over attacks."""

from collections import Counter

import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric

from robustlab.attacks.base import Attack
from robustlab.errors import RobustlabError
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.record import BatchRecord
from robustlab.metrics import AAB, AAW, CA, MR, AttackMetric
from robustlab.metrics.computation_cost import CC
from robustlab.metrics.functional import classification_accuracy, misclassification_ratio
from robustlab.utils import synced_states, to_python

#: The report key of an attack's robust accuracy, by ``Attack.kind`` (comprehensive paper, Sec. III-B-1).
ACCURACY_KEYS = {"whitebox": "AAW", "blackbox": "AAB"}


def _accuracy(states: dict[str, torch.Tensor]) -> float:
    return classification_accuracy(states["correct"], states["total"]).item()


class _AttackMetrics(nn.Module):
    def __init__(self, attack: Attack, metrics: dict[str, AttackMetric]):
        super().__init__()
        if attack.kind not in ACCURACY_KEYS:
            raise RobustlabError(
                f"{type(attack).__name__} has kind {attack.kind!r}",
                f"set its kind to one of {', '.join(ACCURACY_KEYS)}",
            )
        self.robust = AAW() if attack.kind == "whitebox" else AAB()
        self.worst_draw, self.mr, self.cost, self.setup = CA(), MR(), CC(), CC()
        self.counts = nn.ModuleDict({"queries": MeanMetric(), "iterations": MeanMetric()})
        self.extra = nn.ModuleDict({name: metric.clone() for name, metric in metrics.items()})


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(D, B)``: whether each of ``D`` draws of logits ``(D, B, classes)`` classifies ``y`` correctly."""
    return logits.argmax(2) == y


class AttackEvaluation(Evaluation):
    """Sections ``clean`` (``CA``, ``n_samples``), ``attacks`` and ``worst_case``.

    Per attack: ``robust_accuracy`` (share of *all* samples classified correctly both clean and under the
    attack), the same value under ``AAW`` or ``AAB`` by the attack's ``kind``, ``MR`` (DEEPSEC: share of
    clean-correct samples the attack misclassifies, or, for a targeted attack, moves to its target),
    ``n_samples``, ``seconds`` (generation time summed over processes, without one-off fitting, which a
    fitted attack such as UAP reports as ``fit_seconds``), ``CC`` (DEEPSEC's computation cost: ``seconds`` per
    sample), ``queries`` and ``iterations`` (means per sample, for an attack that counts them) and every
    attack-utility metric in ``metrics`` (a copy per attack) under its class name, or ``<class>_<name>`` when
    a class is given twice. ``worst_case`` counts a sample robust only if every attack failed on it.

    A randomised model is scored on ``D`` draws of every image set (:meth:`BatchRecord.draw_logits`):
    ``CA``, ``robust_accuracy`` and the worst case are the expected accuracy, the mean over draws of per-draw
    correctness (draw ``d`` of the clean image with draw ``d`` of the adversarial one); ``CA_worst_draw``,
    ``robust_accuracy_worst_draw`` count a sample only if it is correct on every draw; ``MR`` pools the draws;
    the attack-utility metrics read the mean logits over the draws; ``clean.draws`` gives ``D``."""

    journaled = ("metrics",)

    sections = ("clean", "attacks", "worst_case")

    def __init__(self, metrics: dict[str, AttackMetric] | None = None):
        self.attack_metrics = dict(metrics or {})
        classes = Counter(type(m).__name__ for m in self.attack_metrics.values())
        self.metric_keys = {
            name: type(m).__name__ if classes[type(m).__name__] == 1 else f"{type(m).__name__}_{name}"
            for name, m in self.attack_metrics.items()
        }

    @property
    def needs_final_iterates(self) -> bool:
        """Only the attack-utility metrics read the returned images; robust accuracy, MR and the worst case read
        success alone."""
        return bool(self.attack_metrics)

    def setup(self, context: Context) -> None:
        self.attacks, self.draws = context.attacks, context.draws
        self.metrics = nn.ModuleDict(
            {
                "clean": CA(),
                "clean_worst_draw": CA(),
                "worst_case": CA(),
                "worst_case_worst_draw": CA(),
                **{name: _AttackMetrics(attack, self.attack_metrics) for name, attack in self.attacks.items()},
            }
        ).to(context.device)

    @staticmethod
    def _count(metric: CA, correct: torch.Tensor, y: torch.Tensor) -> None:
        """Feed ``correct`` (a flag per sample, or per draw and sample) to an accuracy metric."""
        y = y.expand_as(correct)
        metric.update(torch.where(correct, y, -1).flatten(), y.flatten())

    def update(self, record: BatchRecord) -> None:
        x, y = record.x, record.y
        clean_draws = record.draw_logits("clean")
        clean = _correct(clean_draws, y)
        self._count(self.metrics["clean"], clean, y)
        self._count(self.metrics["clean_worst_draw"], clean.all(0), y)
        clean_logits, n = clean_draws.mean(0), len(clean_draws)
        robust = clean
        for name, result in record.attacks.items():
            m, adv_draws = self.metrics[name], record.draw_logits(name)
            adv = _correct(adv_draws, y)
            target = None if result.target is None else result.target.repeat(n)
            m.robust.update(
                record.model, x, result.x_adv, y.repeat(n), clean_draws.flatten(0, 1), adv_draws.flatten(0, 1), target
            )
            self._count(m.worst_draw, (clean & adv).all(0), y)
            for metric in m.extra.values():
                metric.update(record.model, x, result.x_adv, y, clean_logits, adv_draws.mean(0), result.target)
            m.mr.update(clean_draws.flatten(0, 1).argmax(1), adv_draws.flatten(0, 1).argmax(1), y.repeat(n), target)
            m.cost.update(result.seconds, len(y))
            m.setup.update(result.setup_seconds, len(y))
            for key, counter in m.counts.items():
                if getattr(result, key) is not None:
                    counter.update(getattr(result, key).double())
            robust = robust & adv
        self._count(self.metrics["worst_case"], robust, y)
        self._count(self.metrics["worst_case_worst_draw"], robust.all(0), y)

    def _accuracies(self, key: str, expected: CA, worst: CA) -> dict:
        """``{key: expected accuracy}`` and, for a randomised model, ``{key}_worst_draw``."""
        states = synced_states(expected)
        out = {key: _accuracy(states)}
        if self.draws > 1:
            out[f"{key}_worst_draw"] = _accuracy(synced_states(worst))
        return out

    def results(self) -> dict:
        n = int(synced_states(self.metrics["clean_worst_draw"])["total"])
        clean = self._accuracies("CA", self.metrics["clean"], self.metrics["clean_worst_draw"])
        results = {
            "clean": {**clean, "n_samples": n, **({"draws": self.draws} if self.draws > 1 else {})},
            "attacks": {},
        }
        for name, attack in self.attacks.items():
            m = self.metrics[name]
            robust = self._accuracies("robust_accuracy", m.robust, m.worst_draw)
            mr, cost, setup = (synced_states(metric) for metric in (m.mr, m.cost, m.setup))
            results["attacks"][name] = {
                **robust,
                ACCURACY_KEYS[attack.kind]: robust["robust_accuracy"],
                "MR": misclassification_ratio(mr["fooled"], mr["clean_correct"]).item(),
                "n_samples": n,
                "seconds": float(cost["seconds"]),
                "CC": float(cost["seconds"]) / n if n else float("nan"),
                **({"fit_seconds": float(setup["seconds"])} if setup["seconds"] > 0 else {}),
                **self._counts(m),
                **{self.metric_keys[key]: to_python(metric.compute()) for key, metric in m.extra.items()},
            }
        if self.attacks:
            worst = self._accuracies(
                "robust_accuracy", self.metrics["worst_case"], self.metrics["worst_case_worst_draw"]
            )
            results["worst_case"] = {**worst, "n_samples": n, "attacks": list(self.attacks)}
        return results

    @staticmethod
    def _counts(m: _AttackMetrics) -> dict[str, float]:
        """The mean model queries and iterations per example, for an attack that counts them."""
        states = {key: synced_states(counter) for key, counter in m.counts.items()}
        return {key: float(s["mean_value"] / s["weight"]) for key, s in states.items() if s["weight"] > 0}

    def scalars(self, results: dict) -> dict[str, float]:
        log = {
            f"{name}/{key}": value
            for name, r in results["attacks"].items()
            for key, value in r.items()
            if key in ("robust_accuracy", "MR")
        }
        if "worst_case" in results:
            log["robust_acc"] = results["worst_case"]["robust_accuracy"]
        return log

    def summary(self, results: dict) -> str:
        clean = results["clean"]
        lines = [
            f"clean CA {clean['CA']:.4f} on {clean['n_samples']} samples"
            + (f" ({clean['draws']} draws; worst draw {clean['CA_worst_draw']:.4f})" if "draws" in clean else "")
        ]
        lines += [
            f"{name}: robust accuracy {r['robust_accuracy']:.4f}"
            + (f" (worst draw {r['robust_accuracy_worst_draw']:.4f})" if "robust_accuracy_worst_draw" in r else "")
            + f", MR {r['MR']:.4f}, {r['seconds']:.1f}s"
            for name, r in results["attacks"].items()
        ]
        if "worst_case" in results:
            lines.append(f"worst case over attacks: robust accuracy {results['worst_case']['robust_accuracy']:.4f}")
        return "\n".join(lines)
