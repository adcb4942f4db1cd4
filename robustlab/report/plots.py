"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state) and
returned as PNG bytes."""

import io
import math
from collections.abc import Callable

import numpy as np
from matplotlib.figure import Figure

from robustlab.report.content import layer_values, worst_attack

WIDTH = 7.0
DPI = 110
HIGHLIGHT, BAR, MUTED = "#c0392b", "#2e6da4", "#7f8c8d"


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)  # the constrained layout fits labels and legends
    return buffer.getvalue()


def _figure(height: float, ncols: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_axisbelow(True)
    return figure, list(axes)


def robust_accuracy(report: dict) -> Figure:
    """Per-attack robust accuracy as horizontal bars, the strongest attack highlighted, clean accuracy and the
    per-example worst case as lines."""
    attacks = report["attacks"]
    names = list(attacks)
    values = [attacks[n]["robust_accuracy"] for n in names]
    figure, (ax,) = _figure(0.9 + 0.32 * len(names))
    worst = worst_attack(report)
    bars = ax.barh(names, values, color=[HIGHLIGHT if n == worst else BAR for n in names])
    ax.bar_label(bars, [f"{100 * v:.1f}%" for v in values], padding=3, fontsize="small")
    ax.invert_yaxis()
    ax.axvline(report["clean"]["CA"], color="black", linestyle="--", label="clean accuracy")
    if report.get("worst_case"):
        ax.axvline(report["worst_case"]["robust_accuracy"], color=HIGHLIGHT, linestyle=":", label="worst case")
    ax.set_xlim(0, 1.12)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("robust accuracy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return figure


def _curves(curves: dict, x_key: str, xlabel: str, by_norm: bool) -> Figure:
    groups: dict[str, dict] = {}
    for name, c in curves.items():
        groups.setdefault(c.get("norm", "") if by_norm else "", {})[name] = c
    figure, axes = _figure(3.2, len(groups))
    for ax, (norm, members) in zip(axes, groups.items(), strict=True):
        for name, c in members.items():
            line = ax.plot(c[x_key], c["robust_accuracy"], marker="o", markersize=3, label=name)[0]
            if "budget" in c:
                ax.axvline(c["budget"], color=line.get_color(), linestyle=":", alpha=0.6)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"{xlabel} ({norm})" if norm else xlabel)
        ax.set_ylabel("robust accuracy")
        ax.legend(fontsize="small")
    return figure


def curves_eps(report: dict) -> Figure:
    """Robust accuracy against eps, one panel per norm; dotted lines mark each attack's own budget."""
    return _curves(report["curves"]["eps"], "eps", "eps", by_norm=True)


def curves_steps(report: dict) -> Figure:
    return _curves(report["curves"]["steps"], "steps", "attack steps", by_norm=False)


def corruption(report: dict) -> Figure:
    """The corruption error heat map, corruption x severity, with mCE / RmCE / mFR in the title."""
    c = report["corruption"]
    names = list(c["errors"])
    severities = sorted({s for per in c["errors"].values() for s in per}, key=lambda s: int(s))
    grid = np.array([[c["errors"][n].get(s, np.nan) for s in severities] for n in names], dtype=float)
    figure, (ax,) = _figure(1.2 + 0.28 * len(names))
    image = ax.imshow(grid, cmap="viridis_r", vmin=0, vmax=1, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_xlabel("severity")
    for (i, j), value in np.ndenumerate(grid):
        if math.isfinite(value):
            ax.text(
                j,
                i,
                f"{100 * value:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.5 else "black",
            )
    figure.colorbar(image, ax=ax, label="error")
    summary = [f"{k} {c[k]:.3f}" for k in ("mCE", "RmCE", "mFR") if isinstance(c.get(k), float) and math.isfinite(c[k])]
    ax.set_title("corruption error (%)" + (": " + ", ".join(summary) if summary else ""), fontsize="medium")
    return figure


def _grouped(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, groups)
    ax.legend(fontsize="small")


def coverage(report: dict) -> Figure:
    """Each coverage criterion on the clean set and on each attack's set, as grouped bars."""
    cov = report["coverage"]
    metrics = list(cov["clean"])
    series = {"clean": [cov["clean"][m] for m in metrics]}
    series |= {name: [r.get(m, np.nan) for m in metrics] for name, r in (cov.get("attacks") or {}).items()}
    figure, (ax,) = _figure(3.0)
    _grouped(ax, metrics, series)
    ax.set_ylim(0, 1)
    ax.set_ylabel("coverage")
    return figure


def structure(report: dict) -> Figure:
    """Neuron uncertainty per layer and each attack's neuron sensitivity per layer."""
    s = report["structure"]
    layers = list(s["NeuronUncertainty"])
    figure, (left, right) = _figure(3.0, 2)
    left.bar(layers, [s["NeuronUncertainty"][layer] for layer in layers], color=BAR)
    left.set_title("neuron uncertainty", fontsize="medium")
    sensitivity, _ = layer_values(s.get("NeuronSensitivity"))
    for name, per in sensitivity.items():
        right.plot(list(per), list(per.values()), marker="o", label=name)
    right.set_title("neuron sensitivity" + ("" if sensitivity else " (does not apply)"), fontsize="medium")
    if sensitivity:
        right.legend(fontsize="small")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=45, labelsize="small")
        ax.set_xlabel("layer")
    return figure


def detection(report: dict) -> Figure:
    """Per attack, the share of successful adversarial examples detected; the clean false-positive rate as a line."""
    d = report["detection"]
    names = list(d.get("attacks") or {})
    figure, (ax,) = _figure(0.9 + 0.32 * max(len(names), 1))
    rates = [d["attacks"][n]["detection_rate"] for n in names]
    ax.bar_label(ax.barh(names, rates, color=BAR), [f"{100 * v:.1f}%" for v in rates], padding=3, fontsize="small")
    ax.invert_yaxis()
    ax.axvline(d["fpr"], color=HIGHLIGHT, linestyle="--", label="clean false-positive rate")
    ax.set_xlim(0, 1.12)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("detection rate")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return figure


def matrix(runs: list[str], attacks: list[str], values: list[list[float | None]]) -> Figure:
    """The security-evaluation matrix as a heat map: runs x (attacks, worst case), cells robust accuracy."""
    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    figure, (ax,) = _figure(1.0 + 0.4 * len(runs))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(len(runs)), runs, fontsize="small")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, "n/a" if not math.isfinite(value) else f"{100 * value:.1f}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=ax, label="robust accuracy")
    return figure


FIGURES: dict[str, tuple[str, Callable[[dict], Figure]]] = {
    "robust_accuracy": ("Robust accuracy per attack", robust_accuracy),
    "curves_eps": ("Robust accuracy against eps", curves_eps),
    "curves_steps": ("Robust accuracy against attack steps", curves_steps),
    "corruption": ("Corruption error per corruption and severity", corruption),
    "coverage": ("Neuron coverage per image set", coverage),
    "structure": ("Neuron metrics per layer", structure),
    "detection": ("Detection rate per attack", detection),
}


def draw(key: str, report: dict) -> bytes:
    """The PNG of figure ``key`` of :data:`FIGURES`."""
    return png(FIGURES[key][1](report))
