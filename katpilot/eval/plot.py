"""The accuracy-against-tokens plot: the auto sweep as a line, always-on and always-off as marks.

matplotlib is imported here only (never on the serving path), through `Figure` rather than pyplot:
no global state and no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from katpilot.eval.results import EvalResults
from katpilot.eval.stats import ConditionSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

AUTO_LABEL = "auto (threshold sweep)"
FORCED_LABELS = {"on": "always on", "off": "always off"}


def plotted_summaries(results: EvalResults) -> dict[str, list[ConditionSummary]]:
    """What goes on the plot, by series label: the sweep (one point when it is unavailable), on, off."""
    autos = [s for s in results.shown_summaries() if s.think == "auto"]
    series = {AUTO_LABEL: sorted(autos, key=lambda s: s.threshold or 0.0)} if autos else {}
    for mode, label in FORCED_LABELS.items():
        found = results.summary(mode)
        if found is not None:
            series[label] = [found]
    return series


def build_figure(results: EvalResults) -> Figure:
    """x: completion tokens per item (mean); y: accuracy in %, with its 95% interval as error bars."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.subplots()
    # The sweep is drawn last, in hollow circles, so a point on top of always-off stays visible.
    styles: dict[str, dict[str, Any]] = {
        "always on": {"marker": "^", "color": "tab:red", "markersize": 9, "linestyle": "none"},
        "always off": {"marker": "v", "color": "tab:green", "markersize": 9, "linestyle": "none"},
        AUTO_LABEL: {"marker": "o", "color": "tab:blue", "markersize": 11, "markerfacecolor": "none", "zorder": 3},
    }
    series = plotted_summaries(results)
    for label in sorted(series, key=lambda name: name == AUTO_LABEL):
        points = series[label]
        xs = [s.mean_tokens for s in points]
        ys = [100 * s.accuracy for s in points]
        # max(0, ...): at 0% or 100% the interval's end can land a rounding error past the point
        low = [max(0.0, 100 * (s.accuracy - s.accuracy_ci.low)) if s.accuracy_ci else 0.0 for s in points]
        high = [max(0.0, 100 * (s.accuracy_ci.high - s.accuracy)) if s.accuracy_ci else 0.0 for s in points]
        style = styles[label]
        colour: str = style["color"]
        axes.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor=colour, alpha=0.35, capsize=3)
        axes.plot(xs, ys, label=label, **style)
        if label == AUTO_LABEL and len(points) > 1:
            at: dict[tuple[float, float], list[str]] = {}  # thresholds on one spot share one label
            for s, x, y in zip(points, xs, ys, strict=True):
                at.setdefault((x, y), []).append(f"{s.threshold:g}")
            for (x, y), names in at.items():
                axes.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
    model = results.run.get("model", "?")
    axes.set_title(f"{results.suite} on {model}\naccuracy against tokens, {results.items} items", fontsize=10)
    axes.set_xlabel("completion tokens per item (mean)")
    axes.set_ylabel("accuracy (%, 95% interval)")
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    if results.sweep is not None and not results.sweep.available:
        axes.text(
            0.01, 0.01, f"sweep unavailable: {results.sweep.why_not}", transform=axes.transAxes, fontsize=6, wrap=True
        )
    return figure


def save_plot(results: EvalResults, out: Path) -> list[Path]:
    """plot.png and plot.svg in `out`."""
    figure = build_figure(results)
    paths = [out / "plot.png", out / "plot.svg"]
    figure.savefig(paths[0], dpi=130)
    figure.savefig(paths[1])
    return paths
