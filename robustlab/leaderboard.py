"""``report.json["robustbench"]``: the result in the shape of RobustBench's ``model_info`` JSON, so that it can be
compared with, or submitted to, the leaderboard."""

from fractions import Fraction
from pathlib import Path
from typing import Any

from robustlab.resolvers import FAMILY_BUDGETS

#: RobustBench's standard budgets per (dataset, norm).
STANDARD = {
    ("cifar10", "linf"): 8 / 255,
    ("cifar10", "l2"): 0.5,
    ("cifar100", "linf"): 8 / 255,
    ("cifar100", "l2"): 0.5,
    ("imagenet", "linf"): 4 / 255,
}
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
AUTOATTACK = "robustlab.attacks.AutoAttack"
#: The fields of a leaderboard entry robustlab cannot know; the submitter fills them in.
BY_HAND = ("link", "authors", "venue", "additional_data", "reported")


def eps_text(eps: float) -> str:
    """RobustBench writes budgets as ``"8/255"`` where they are a whole number of 8-bit levels, else decimals."""
    levels = Fraction(eps * 255).limit_denominator(1000)
    if levels.denominator == 1 and abs(float(levels) - eps * 255) < 1e-6:
        return f"{levels.numerator}/255"
    return f"{eps:g}"


def robustbench_entry(report: dict[str, Any], datamodule, source: dict[str, Any]) -> dict[str, Any]:
    """Clean accuracy, ``autoattack_acc`` (when AutoAttack, version standard, ran at RobustBench's budget for the
    data and norm; otherwise null and ``autoattack_note`` says why), eps, threat model and evaluated points.
    Accuracies are percentages with two decimals, as strings, as in RobustBench's files."""
    dataset = source.get("dataset") if source["source"] == "robustbench" else datamodule.name
    runs = [(k, p) for k, p in report["attack_params"].items() if (p or {}).get("_target_") == AUTOATTACK]
    threat = {
        **FAMILY_BUDGETS.get(getattr(datamodule, "family", None), {}),
        **(getattr(datamodule, "threat", {}) or {}),
    }
    norm, eps = "linf", threat.get("linf")
    entry: dict[str, Any] = {
        "name": source.get("name") or Path(source.get("path") or source["source"]).stem,
        "architecture": source.get("target"),
        "dataset": dataset,
        **dict.fromkeys(BY_HAND),
        "number_forward_passes": 1,
        "clean_acc": f"{100 * report['clean']['CA']:.2f}",
        "autoattack_acc": None,
        "n_examples": report["clean"]["n_samples"],
    }
    if not runs:
        entry["autoattack_note"] = "AutoAttack did not run (add attack=[autoattack])"
    else:
        name, params = runs[0]
        norm, eps = params.get("norm", "linf"), params.get("eps")
        standard = STANDARD.get((dataset, norm))
        if params.get("version") != "standard":
            entry["autoattack_note"] = f"AutoAttack ran as version={params.get('version')}, not standard"
        elif standard is None or eps is None or abs(eps - standard) > 1e-9:
            entry["autoattack_note"] = f"eps {eps} is not RobustBench's {dataset} {norm} budget ({standard})"
        else:
            entry["autoattack_acc"] = f"{100 * report['attacks'][name]['robust_accuracy']:.2f}"
    entry["threat_model"] = THREAT_MODELS.get(norm, norm)
    entry["eps"] = eps_text(eps) if eps is not None else None
    return entry
