"""What a report page shows, built from a ``report.json`` alone: the header, the verdict and one section per part
of the evaluation, each a list of tables (rendered to HTML and Markdown alike) and figures (HTML only)."""

import math
from dataclasses import dataclass, field
from typing import Any

#: Attack-table columns after robust accuracy and MR, in this order, when an attack reports them.
METRIC_COLUMNS = ("ACAC", "ACTC", "ALDp.L0", "ALDp.L2", "ALDp.Linf", "ASS", "PSD", "NTE", "RGB", "RIC")
#: Report values that are shares (shown as percentages).
RATES = {
    "CA",
    "CA_worst_draw",
    "robust_accuracy",
    "robust_accuracy_worst_draw",
    "AAW",
    "AAB",
    "MR",
    "RGB",
    "RIC",
    "KMNCov",
    "NBCov",
    "SNACov",
    "TKNCov",
    "detection_rate",
    "fpr",
    "clean_error",
}
STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2}


@dataclass
class Cell:
    """One table cell: its shown ``text`` and, for a number read from the report, the ``value`` and its dotted
    ``key`` in ``report.json`` (written into the HTML, so the page can be checked against the JSON)."""

    text: str
    value: float | int | None = None
    key: str | None = None
    status: str | None = None
    link: str | None = None


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    highlight: set[int] = field(default_factory=set)
    note: str = ""
    #: Long data behind a figure: folded away in the HTML (under the figures), in full in the Markdown.
    collapsed: bool = False
    #: What each row is (the comparison page: the run directory), written into the HTML rows.
    row_ids: list[str] = field(default_factory=list)


@dataclass
class Section:
    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def fmt(value: Any, rate: bool = False) -> str:
    """A report value as shown: a share as a percentage with two decimals, another number with four significant
    digits, ``n/a`` for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if rate:
        return f"{100 * value:.2f}%"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def number(report: dict, key: str, rate: bool | None = None) -> Cell:
    """The cell of the value at dotted ``key`` in ``report`` (``n/a`` where it is absent)."""
    value = lookup(report, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return Cell(fmt(value), key=key)
    last = key.rsplit(".", 1)[-1]
    return Cell(fmt(value, last in RATES if rate is None else rate), value, key)


def lookup(report: dict, key: str) -> Any:
    """The value at dotted ``key`` (``a.b.c``; a list's items by index, ``a.0``) in ``report``, or None."""
    node: Any = report
    for step in split_key(key):
        if isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return None
    return node


def split_key(key: str) -> list[str]:
    """A dotted key's parts; a part in brackets (``errors.[glass_blur].1``) may hold dots."""
    parts, rest = [], key
    while rest:
        if rest.startswith("["):
            part, _, rest = rest[1:].partition("]")
            rest = rest.removeprefix(".")
        else:
            part, _, rest = rest.partition(".")
        parts.append(part)
    return parts


def part(name: str) -> str:
    """``name`` as one part of a dotted key."""
    return f"[{name}]" if "." in name or "[" in name else name


def text(value: Any) -> Cell:
    return Cell("" if value is None else str(value))


def threat(report: dict) -> dict[str, dict]:
    """``{attack: {"norm", "eps"}}``: the report's ``threat`` section, or, for an older report, what its attack
    parameters say (a norm not given is left unknown)."""
    if report.get("threat"):
        return report["threat"]
    out = {}
    for name, params in (report.get("attack_params") or {}).items():
        if isinstance(params, dict) and isinstance(params.get("eps"), int | float):
            out[name] = {"norm": params.get("norm"), "eps": params["eps"]}
    return out


def threat_text(report: dict) -> str:
    """The threat models of a report in one line, e.g. ``Linf eps 0.3 (fgsm, pgd_linf); L2 eps 2 (pgd_l2)``."""
    groups: dict[tuple, list[str]] = {}
    for name, t in threat(report).items():
        groups.setdefault((t.get("norm"), t["eps"]), []).append(name)
    norms = {"linf": "Linf", "l2": "L2", "l1": "L1", "l0": "L0"}
    parts = [
        f"{norms.get(norm, norm or '')} eps {fmt(eps)} ({', '.join(names)})".strip()
        for (norm, eps), names in groups.items()
    ]
    return "; ".join(parts) or "no eps-bounded attack"


def header(report: dict) -> list[tuple[str, str]]:
    """The page header's ``(label, value)`` lines, for the values the report has."""
    source = report.get("model_source") or {}
    run = report.get("run") or {}
    clean = report.get("clean") or {}
    model = source.get("name") or source.get("path") or report.get("checkpoint")
    lines = [
        ("model", model),
        ("source", source.get("source")),
        ("architecture", report.get("model") or source.get("target")),
        ("defense", report.get("defense_name")),
        ("data", report.get("data")),
        ("threat model", threat_text(report) if report.get("attacks") else None),
        ("samples", clean.get("n_samples")),
        ("draws per image set", clean.get("draws")),
        ("seed", report.get("seed")),
        ("processes", report.get("world_size")),
        ("robustlab", run.get("robustlab")),
        ("date", run.get("date")),
        ("command", run.get("command")),
    ]
    return [(label, str(value)) for label, value in lines if value is not None]


def checks_counts(report: dict) -> dict[str, int]:
    checks = report.get("checks") or []
    return {s: sum(c.get("status") == s for c in checks) for s in ("pass", "warn", "fail")}


def checks_status(report: dict) -> str:
    """``fail``, ``warn`` or ``pass``: the worst status of the report's checks (``none`` without checks)."""
    if not report.get("checks"):
        return "none"
    return min((c.get("status", "pass") for c in report["checks"]), key=lambda s: STATUS_ORDER.get(s, 2))


def worst_attack(report: dict) -> str | None:
    attacks = report.get("attacks") or {}
    scored = {n: r["robust_accuracy"] for n, r in attacks.items() if _finite(r.get("robust_accuracy"))}
    return min(scored, key=scored.get) if scored else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def verdict(report: dict) -> Table:
    """Clean accuracy, the per-example worst case over all attacks, the worst single attack and the checks."""
    rows = [[text("clean accuracy"), number(report, "clean.CA")]]
    if "CA_worst_draw" in (report.get("clean") or {}):
        rows.append([text("clean accuracy, worst draw"), number(report, "clean.CA_worst_draw")])
    if report.get("worst_case"):
        rows.append(
            [
                text("worst-case robust accuracy (every attack, per example)"),
                number(report, "worst_case.robust_accuracy"),
            ]
        )
        if "robust_accuracy_worst_draw" in report["worst_case"]:
            rows.append([text("worst case, worst draw"), number(report, "worst_case.robust_accuracy_worst_draw")])
    worst = worst_attack(report)
    if worst:
        rows.append(
            [text(f"strongest single attack: {worst}"), number(report, f"attacks.{part(worst)}.robust_accuracy")]
        )
    if report.get("checks"):
        counts = checks_counts(report)
        status = checks_status(report)
        rows.append(
            [
                text("checks"),
                Cell(f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail", status=status),
            ]
        )
    return Table("verdict", "Verdict", ["", "value"], rows)


def attack_table(report: dict) -> Table:
    attacks = report["attacks"]
    threats = threat(report)
    present = [c for c in METRIC_COLUMNS if any(lookup(r, c) is not None for r in attacks.values())]
    extra = [c for c in ("robust_accuracy_worst_draw",) if any(c in r for r in attacks.values())]
    counts = [c for c in ("queries", "iterations") if any(c in r for r in attacks.values())]
    columns = ["attack", "norm", "eps", "robust accuracy", *extra, "MR", *present, "seconds", *counts]
    rows, worst = [], worst_attack(report)
    for name, r in attacks.items():
        key = f"attacks.{part(name)}"
        t = threats.get(name, {})
        source = "threat" if report.get("threat") else "attack_params"
        eps = Cell(fmt(t["eps"]), t["eps"], f"{source}.{part(name)}.eps") if "eps" in t else text("")
        row = [text(name), text(t.get("norm") or ""), eps]
        row += [number(report, f"{key}.{c}") for c in ("robust_accuracy", *extra, "MR", *present, "seconds")]
        row += [number(report, f"{key}.{c}") for c in counts]
        rows.append(row)
    highlight = {list(attacks).index(worst)} if worst else set()
    note = (
        f"Worst attack highlighted ({worst}). Robust accuracy counts a sample only if it is classified correctly "
        "both clean and under the attack; MR is the share of clean-correct samples the attack fools."
    )
    return Table("attacks", "Attacks", columns, rows, highlight, note if worst else "")


def sorted_checks(report: dict) -> list[dict]:
    """The report's checks, failures first, then warnings."""
    return sorted(report.get("checks") or [], key=lambda c: STATUS_ORDER.get(c.get("status"), 2))


def checks_table(report: dict) -> Table:
    rows = [
        [
            Cell(c.get("status", ""), status=c.get("status")),
            text(c.get("name")),
            text(c.get("evidence")),
            text(c.get("fix")),
        ]
        for c in sorted_checks(report)
    ]
    return Table("checks", "Checks", ["status", "check", "evidence", "fix"], rows)


def corruption_tables(report: dict) -> list[Table]:
    c = report["corruption"]
    summary = Table(
        "corruption",
        "Corruption robustness",
        ["mCE", "RmCE", "mFR", "clean error", "samples"],
        [
            [
                number(report, f"corruption.{k}", rate=k == "clean_error")
                for k in ("mCE", "RmCE", "mFR", "clean_error", "n_samples")
            ]
        ],
        note="mCE and RmCE are relative to the baseline's errors when normalised, else to 1."
        if c.get("normalised")
        else "Without a baseline, mCE is the mean corruption error and RmCE / mFR need a baseline.",
    )
    errors = c.get("errors") or {}
    severities = sorted({s for per in errors.values() for s in per}, key=lambda s: int(s) if str(s).isdigit() else s)
    grid = Table(
        "corruption_errors",
        "Corruption error per severity",
        ["corruption", *[f"severity {s}" for s in severities]],
        [
            [text(name), *[number(report, f"corruption.errors.{part(name)}.{s}", rate=True) for s in severities]]
            for name, per in errors.items()
        ],
        collapsed=True,
    )
    tables = [summary, grid] if errors else [summary]
    flips = c.get("flip_probabilities") or {}
    if flips:
        tables.append(
            Table(
                "flip_probabilities",
                "Flip probability per perturbation sequence",
                ["perturbation", "flip probability"],
                [[text(n), number(report, f"corruption.flip_probabilities.{part(n)}", rate=True)] for n in flips],
            )
        )
    return tables


def coverage_table(report: dict) -> Table:
    cov = report["coverage"]
    metrics = list((cov.get("clean") or {}).keys())
    rows = [[text("clean"), *[number(report, f"coverage.clean.{m}", rate=True) for m in metrics]]]
    rows += [
        [text(name), *[number(report, f"coverage.attacks.{part(name)}.{m}", rate=True) for m in metrics]]
        for name in cov.get("attacks") or {}
    ]
    note = (
        f"{cov.get('n_neurons', '?')} neurons in {len(cov.get('layers') or {})} layers, "
        f"k={cov.get('k')}, top-k={cov.get('top_k')}."
    )
    return Table("coverage", "Neuron coverage", ["image set", *metrics], rows, note=note)


def layer_values(value: Any) -> tuple[dict[str, dict], dict[str, str]]:
    """A per-attack section of layer values split into ``({attack: {layer: value}}, {attack: why not})``: an
    attack's entry is a sentence where the metric does not apply."""
    if not isinstance(value, dict):
        return {}, ({"every attack": str(value)} if value is not None else {})
    return (
        {k: v for k, v in value.items() if isinstance(v, dict)},
        {k: str(v) for k, v in value.items() if not isinstance(v, dict)},
    )


def structure_tables(report: dict) -> list[Table]:
    s = report["structure"]
    layers = list((s.get("NeuronUncertainty") or {}).keys())
    sensitivity, unpaired = layer_values(s.get("NeuronSensitivity"))
    for per in sensitivity.values():
        layers += [layer for layer in per if layer not in layers]
    per_layer = Table(
        "structure_layers",
        "Neuron metrics per layer",
        ["layer", "NeuronUncertainty", *[f"NeuronSensitivity {a}" for a in sensitivity]],
        [
            [
                text(layer),
                number(report, f"structure.NeuronUncertainty.{part(layer)}"),
                *[number(report, f"structure.NeuronSensitivity.{part(a)}.{part(layer)}") for a in sensitivity],
            ]
            for layer in layers
        ],
    )
    scalars = [k for k in ("EBD", "EBD_censored", "ENI", "ENI_skipped", "n_samples") if k in s]
    ebd2 = [k for k in ("EBD2", "nearest", "failure_rate") if k in (s.get("EBD2") or {})]
    model = Table(
        "structure",
        "Model structure",
        [*scalars, *[f"EBD2 {k}" if k != "EBD2" else "EBD2" for k in ebd2]],
        [
            [
                *[number(report, f"structure.{k}") for k in scalars],
                *[number(report, f"structure.EBD2.{k}", rate=k == "failure_rate") for k in ebd2],
            ]
        ],
        note="; ".join(f"NeuronSensitivity ({name}): {why}" for name, why in unpaired.items()),
    )
    return [model, per_layer] if layers else [model]


def defense_table(report: dict) -> Table:
    d = report["defense"]
    keys = [k for k in ("CAV", "CRR", "CSR", "CCV", "COS", "n_samples") if k in d]
    rows = [[number(report, f"defense.{k}", rate=False) for k in keys]] if keys else []
    note = "" if keys else f"skipped: {d.get('skipped')}"
    return Table("defense", "Defense utility (against the baseline)", keys, rows, note=note)


def detection_table(report: dict) -> Table:
    d = report["detection"]
    rows = [[text("clean (false positives)"), number(report, "detection.fpr"), number(report, "detection.n_clean")]]
    rows += [
        [
            text(name),
            number(report, f"detection.attacks.{part(name)}.detection_rate"),
            number(report, f"detection.attacks.{part(name)}.n"),
        ]
        for name in d.get("attacks") or {}
    ]
    note = f"Threshold {fmt(d.get('threshold'))}; attacks: share of their successful adversarial examples detected."
    return Table("detection", "Detection", ["image set", "rate", "samples"], rows, note=note)


def curve_tables(report: dict) -> list[Table]:
    curves = report["curves"]
    tables = []
    eps = curves.get("eps") or {}
    if eps:
        rows = []
        for name, c in eps.items():
            for i, e in enumerate(c.get("eps") or []):
                rows.append(
                    [
                        text(name),
                        text(c.get("norm")),
                        text(c.get("method")),
                        Cell(fmt(e), e, f"curves.eps.{part(name)}.eps.{i}"),
                        number(report, f"curves.eps.{part(name)}.robust_accuracy.{i}", rate=True),
                    ]
                )
        tables.append(
            Table(
                "curves_eps",
                "Robust accuracy against eps",
                ["attack", "norm", "method", "eps", "robust accuracy"],
                rows,
            )
        )
    steps = curves.get("steps") or {}
    if steps:
        rows = [
            [text(name), Cell(str(s), s), number(report, f"curves.steps.{part(name)}.robust_accuracy.{i}", rate=True)]
            for name, c in steps.items()
            for i, s in enumerate(c.get("steps") or [])
        ]
        tables.append(
            Table("curves_steps", "Robust accuracy against steps", ["attack", "steps", "robust accuracy"], rows)
        )
    return tables


def timing_table(report: dict) -> Table:
    timings = report["timings"]
    rows = [
        [text(kind.rstrip("s")), text(name), number(report, f"timings.{kind}.{part(name)}")]
        for kind in ("attacks", "evaluations")
        for name in timings.get(kind) or {}
    ]
    return Table("timings", "Time (seconds, summed over processes)", ["kind", "name", "seconds"], rows)


def sections(report: dict) -> list[Section]:
    """The page's sections, each only where its data is in the report (figures are keyed, drawn by the renderer)."""
    out = []
    if report.get("attacks"):
        out.append(Section("attacks", "Attacks", [attack_table(report)], ["robust_accuracy"]))
    if report.get("checks"):
        out.append(Section("checks", "Checks", [checks_table(report)]))
    curves = report.get("curves") or {}
    if curves.get("eps") or curves.get("steps"):
        figures = [k for k in ("eps", "steps") if curves.get(k)]
        out.append(Section("curves", "Robustness curves", curve_tables(report), [f"curves_{k}" for k in figures]))
    if report.get("corruption"):
        figures = ["corruption"] if report["corruption"].get("errors") else []
        out.append(Section("corruption", "Corruption robustness", corruption_tables(report), figures))
    if report.get("coverage"):
        out.append(Section("coverage", "Neuron coverage", [coverage_table(report)], ["coverage"]))
    if report.get("structure"):
        figures = ["structure"] if report["structure"].get("NeuronUncertainty") else []
        out.append(Section("structure", "Model structure", structure_tables(report), figures))
    if report.get("defense"):
        out.append(Section("defense", "Defense utility", [defense_table(report)]))
    if report.get("detection"):
        out.append(Section("detection", "Detection", [detection_table(report)], ["detection"]))
    if report.get("timings"):
        out.append(Section("timings", "Time", [timing_table(report)]))
    return out
