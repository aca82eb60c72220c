"""The accuracy-against-tokens plot: the auto sweep as a line, always-on and always-off as marks.

matplotlib is imported here only (never on the serving path), through `Figure` rather than pyplot:
no global state and no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from katpilot.eval.results import EvalResults
from katpilot.eval.stats import ConditionSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

AUTO_LABEL = "auto (threshold sweep)"
FORCED_LABELS = {"on": "always on", "off": "always off"}


def plotted_summaries(results: EvalResults) -> dict[str, list[ConditionSummary]]:
    """What goes on the plot, by series label: the sweep (one point when it is unavailable), on, off."""
    autos = [s for s in results.summaries if s.think == "auto"]
    if autos and results.sweep is not None and not results.sweep.available:
        configured = results.run.get("threshold")
        autos = [next((s for s in autos if s.threshold == configured), autos[0])]
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
    styles = {AUTO_LABEL: ("o-", "tab:blue"), "always on": ("^", "tab:red"), "always off": ("v", "tab:green")}
    for label, points in plotted_summaries(results).items():
        xs = [s.mean_tokens for s in points]
        ys = [100 * s.accuracy for s in points]
        low = [100 * (s.accuracy - s.accuracy_ci.low) if s.accuracy_ci else 0.0 for s in points]
        high = [100 * (s.accuracy_ci.high - s.accuracy) if s.accuracy_ci else 0.0 for s in points]
        marker, colour = styles[label]
        axes.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor=colour, alpha=0.35, capsize=3)
        axes.plot(xs, ys, marker, color=colour, label=label, markersize=8 if label != AUTO_LABEL else 5)
        if label == AUTO_LABEL and len(points) > 1:
            for s, x, y in zip(points, xs, ys, strict=True):
                axes.annotate(f"{s.threshold:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    model = results.run.get("model", "?")
    axes.set_title(f"{results.suite} on {model}: accuracy against tokens ({results.items} items)")
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
