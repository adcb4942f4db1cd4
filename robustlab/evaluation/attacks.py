"""Attack evaluation: clean accuracy, per-attack robust accuracy, MR, generation time and attack-utility
metrics, and the per-example worst case over attacks."""

from collections import Counter

import torch
from torch import nn

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
        self.mr, self.cost = MR(), CC()
        self.extra = nn.ModuleDict({name: metric.clone() for name, metric in metrics.items()})


class AttackEvaluation(Evaluation):
    """Sections ``clean`` (``CA``, ``n_samples``), ``attacks`` and ``worst_case``.

    Per attack: ``robust_accuracy`` (share of *all* samples classified correctly both clean and under the
    attack), the same value under ``AAW`` or ``AAB`` by the attack's ``kind``, ``MR`` (DEEPSEC: share of
    clean-correct samples the attack misclassifies, or, for a targeted attack, moves to its target),
    ``n_samples``, ``seconds`` (generation time summed over processes) and every attack-utility metric in
    ``metrics`` (a copy per attack) under its class name, or ``<class>_<name>`` when a class is given twice.
    ``worst_case`` counts a sample robust only if every attack failed on it."""

    sections = ("clean", "attacks", "worst_case")

    def __init__(self, metrics: dict[str, AttackMetric] | None = None):
        self.attack_metrics = dict(metrics or {})
        classes = Counter(type(m).__name__ for m in self.attack_metrics.values())
        self.metric_keys = {
            name: type(m).__name__ if classes[type(m).__name__] == 1 else f"{type(m).__name__}_{name}"
            for name, m in self.attack_metrics.items()
        }

    def setup(self, context: Context) -> None:
        self.attacks = context.attacks
        self.metrics = nn.ModuleDict(
            {
                "clean": CA(),
                "worst_case": CA(),
                **{name: _AttackMetrics(attack, self.attack_metrics) for name, attack in self.attacks.items()},
            }
        ).to(context.device)

    def update(self, record: BatchRecord) -> None:
        x, y, clean = record.x, record.y, record.clean_pred
        self.metrics["clean"].update(clean, y)
        robust = clean == y
        for name, result in record.attacks.items():
            m, adv = self.metrics[name], result.logits.argmax(1)
            for metric in (m.robust, *m.extra.values()):
                metric.update(record.model, x, result.x_adv, y, record.clean_logits, result.logits, result.target)
            m.mr.update(clean, adv, y, target=result.target)
            m.cost.update(result.seconds, len(y))
            robust &= adv == y
        self.metrics["worst_case"].update(torch.where(robust, y, -1), y)

    def results(self) -> dict:
        clean = synced_states(self.metrics["clean"])
        results = {"clean": {"CA": _accuracy(clean), "n_samples": int(clean["total"])}, "attacks": {}}
        for name, attack in self.attacks.items():
            m = self.metrics[name]
            robust, mr, cost = (synced_states(metric) for metric in (m.robust, m.mr, m.cost))
            accuracy = _accuracy(robust)
            results["attacks"][name] = {
                "robust_accuracy": accuracy,
                ACCURACY_KEYS[attack.kind]: accuracy,
                "MR": misclassification_ratio(mr["fooled"], mr["clean_correct"]).item(),
                "n_samples": int(robust["total"]),
                "seconds": float(cost["seconds"]),
                **{self.metric_keys[key]: to_python(metric.compute()) for key, metric in m.extra.items()},
            }
        if self.attacks:
            worst = synced_states(self.metrics["worst_case"])
            results["worst_case"] = {
                "robust_accuracy": _accuracy(worst),
                "n_samples": int(worst["total"]),
                "attacks": list(self.attacks),
            }
        return results

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
        lines = [f"clean CA {clean['CA']:.4f} on {clean['n_samples']} samples"]
        lines += [
            f"{name}: robust accuracy {r['robust_accuracy']:.4f}, MR {r['MR']:.4f}, {r['seconds']:.1f}s"
            for name, r in results["attacks"].items()
        ]
        if "worst_case" in results:
            lines.append(f"worst case over attacks: robust accuracy {results['worst_case']['robust_accuracy']:.4f}")
        return "\n".join(lines)
