"""The comparison page over many evaluations: DEEPSEC's security-evaluation matrix (rows: models / defenses,
columns: attacks, cells: robust accuracy), ranked by the worst case, with the defense-utility and corruption
columns and each run's checks, one table per data set. Reads only the runs' ``report.json`` files."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from robustlab.errors import RobustlabError
from robustlab.report.content import (
    Cell,
    Table,
    checks_counts,
    checks_status,
    fmt,
    lookup,
    number,
    part,
    text,
    threat,
)
from robustlab.report.render import environment, title
from robustlab.utils import atomic_path

REPORT = "report.json"
DEFENSE = ("CAV", "CRR", "CSR", "CCV", "COS")
CORRUPTION = ("mCE", "RmCE", "mFR")
NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


@dataclass
class Run:
    path: Path
    report: dict


@dataclass
class Group:
    data: str
    table: Table
    runs: list[str]
    notes: list[str]
    figure: bytes = b""


def find_runs(directories: list[str | Path]) -> list[Run]:
    """The runs whose ``report.json`` lies in or under ``directories`` (a Hydra multirun directory included)."""
    runs = []
    for directory in map(Path, directories):
        if not directory.is_dir():
            raise RobustlabError(f"{directory} is not a directory", "give the run directories of evaluate.py")
        for path in sorted(directory.rglob(REPORT)):
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise RobustlabError(
                    f"{path} is not a readable report ({err})", "remove it or rerun that evaluation"
                ) from None
            if not isinstance(report, dict) or "clean" not in report:
                raise RobustlabError(f"{path} is not a robustlab report (no clean accuracy)", "remove it")
            runs.append(Run(path.parent, report))
    if not runs:
        raise RobustlabError(
            f"no {REPORT} under {', '.join(map(str, directories))}",
            "give the run directories that evaluate.py wrote (outputs/eval/<date_time>, or a multirun directory)",
        )
    return runs


def _worst(run: Run) -> float:
    value = (run.report.get("worst_case") or {}).get("robust_accuracy")
    return value if isinstance(value, int | float) and value == value else float("-inf")


def _attack_header(name: str, runs: list[Run]) -> tuple[str, str | None]:
    """The column title of attack ``name`` (with its threat model when every run used the same) and a note when
    the runs attacked under different budgets."""
    seen = {(t.get("norm"), t.get("eps")) for r in runs if (t := threat(r.report).get(name))}
    if len(seen) == 1:
        norm, eps = next(iter(seen))
        return f"{name} ({NORMS.get(norm, norm or 'eps')} {fmt(eps)})", None
    if not seen:
        return name, None
    budgets = ", ".join(f"{NORMS.get(n, n or 'eps')} {fmt(e)}" for n, e in sorted(seen, key=str))
    return f"{name} †", f"† {name} ran under different budgets ({budgets}): its column compares unlike threats."


def group(data: str, runs: list[Run], out_dir: Path) -> Group:
    """The matrix of the runs on one data set, best worst case first."""
    runs = sorted(runs, key=_worst, reverse=True)
    attacks = list(dict.fromkeys(a for r in runs for a in r.report.get("attacks") or {}))
    defense = [k for k in DEFENSE if any(k in (r.report.get("defense") or {}) for r in runs)]
    corruption = [k for k in CORRUPTION if any(k in (r.report.get("corruption") or {}) for r in runs)]
    headers = [_attack_header(a, runs) for a in attacks]
    columns = ["run", "defense", "samples", "clean", *[h for h, _ in headers], "worst case"]
    columns += [*defense, *corruption, "checks"]
    rows = []
    for r in runs:
        report = r.report
        page = r.path / "report.html"
        link = os.path.relpath(page, out_dir) if page.is_file() else None
        status = checks_status(report)
        counts = checks_counts(report)
        flagged = [f"{c['status']}: {c['name']}" for c in report.get("checks") or [] if c.get("status") != "pass"]
        row = [
            Cell(f"{title(report)} ({os.path.relpath(r.path, out_dir)})", link=link),
            text(report.get("defense_name") or (report.get("model_source") or {}).get("source")),
            number(report, "clean.n_samples"),
            number(report, "clean.CA"),
            *[number(report, f"attacks.{part(a)}.robust_accuracy") for a in attacks],
            number(report, "worst_case.robust_accuracy"),
            *[number(report, f"defense.{k}", rate=False) for k in defense],
            *[number(report, f"corruption.{k}", rate=False) for k in corruption],
            Cell(
                "no checks"
                if status == "none"
                else f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail"
                + (f" ({'; '.join(flagged)})" if flagged else ""),
                status=status,
            ),
        ]
        rows.append(row)
    notes = [note for _, note in headers if note]
    if any(set(r.report.get("attacks") or {}) != set(attacks) for r in runs):
        notes.append(
            "Not every run ran every attack (n/a): a worst case over fewer attacks is an upper bound that ranks "
            "higher than it should."
        )
    ids = [str(r.path) for r in runs]
    table = Table(f"matrix-{data}", f"Security evaluation on {data}", columns, rows, row_ids=ids)
    from robustlab.report import plots  # matplotlib loads only when a page is drawn

    values = [[lookup(r.report, f"attacks.{part(a)}.robust_accuracy") for a in attacks] for r in runs]
    values = [[*row, lookup(r.report, "worst_case.robust_accuracy")] for row, r in zip(values, runs, strict=True)]
    labels = [row[0].text for row in rows]
    figure = plots.png(plots.matrix(labels, [*attacks, "worst case"], values)) if attacks else b""
    return Group(data, table, ids, notes, figure)


def comparison(runs: list[Run], out_dir: Path) -> list[Group]:
    """One :class:`Group` per data set, in the order the data sets first appear."""
    by_data: dict[str, list[Run]] = {}
    for r in runs:
        by_data.setdefault(str(r.report.get("data") or "unknown data"), []).append(r)
    return [group(data, members, out_dir) for data, members in by_data.items()]


def write_comparison(runs: list[Run], out: str | Path) -> list[Group]:
    """Write the comparison page of ``runs`` (:func:`find_runs`) to ``out``; return its groups."""
    out = Path(out)
    groups = comparison(runs, out.resolve().parent)
    page = (
        environment().get_template("comparison.html.j2").render(groups=groups, count=sum(len(g.runs) for g in groups))
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return groups
