"""OUT/report.md of a recipe: every stage's wall time and figures, each training stage's curves, and
the evaluation's AutoThink figures and plot.

The AutoThink figures are the ones the recipe exists for, computed from the evaluation's records:
how often the model decided its mode itself (with a judge), its think-on rate on the easiest and the
hardest third of the suite's levels, and auto mode's accuracy and tokens against always-on's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from katpilot.eval.records import write_atomic


@dataclass(frozen=True)
class AutoThinkFigures:
    condition: str  # the auto condition measured (auto@threshold)
    items: int
    decided_by_model: float  # share of auto responses whose mode the model chose, after a judge
    think_on_easy: float  # think-on rate on the easiest third of the levels
    think_on_hard: float  # ... and on the hardest third
    accuracy_auto: float
    accuracy_on: float
    tokens_auto: float  # mean completion tokens per item
    tokens_on: float

    @property
    def token_share(self) -> float:
        return self.tokens_auto / self.tokens_on if self.tokens_on else float("nan")


def autothink_figures(results: Any) -> AutoThinkFigures | None:
    """The figures above from an evaluation with auto and on conditions over a suite with levels."""
    from katpilot.eval.suites import load_suite

    auto = next((s for s in results.shown_summaries() if s.think == "auto"), None)
    on = results.summary("on")
    if auto is None or on is None:
        return None
    try:
        suite = load_suite(results.suite, seed=int(results.run.get("suite_seed") or 0))
    except (KatpilotError, OSError):  # a file suite that moved: no levels, figures without them
        suite = None
    levels = {item.id: item.level for item in suite.items if item.level is not None} if suite else {}
    records = [r for r in results.records if r.condition == auto.condition]
    easy, hard = level_thirds({levels[r.item] for r in records if r.item in levels})

    def on_rate(chosen: set[int]) -> float:
        picked = [r for r in records if levels.get(r.item) in chosen]
        return sum(r.mode == "on" for r in picked) / len(picked) if picked else float("nan")

    decided = sum(r.decided_by == "model" and r.tokens.get("judge", 0) > 0 for r in records)
    return AutoThinkFigures(
        condition=auto.condition,
        items=len(records),
        decided_by_model=decided / len(records) if records else 0.0,
        think_on_easy=on_rate(easy),
        think_on_hard=on_rate(hard),
        accuracy_auto=auto.accuracy,
        accuracy_on=on.accuracy,
        tokens_auto=auto.mean_tokens,
        tokens_on=on.mean_tokens,
    )


def level_thirds(levels: set[int]) -> tuple[set[int], set[int]]:
    """The easiest and the hardest third of a suite's levels (one level each when there are fewer than 3)."""
    ranked = sorted(levels)
    third = max(1, len(ranked) // 3)
    return set(ranked[:third]), set(ranked[-third:])


def figure_lines(figures: AutoThinkFigures) -> list[str]:
    """The AutoThink figures in words (the report's list, `katpilot train run`'s last lines)."""
    return [
        f"decides its mode itself (after a judge) in {figures.decided_by_model:.0%} of "
        f"{figures.items} {figures.condition} responses",
        f"think-on rate: {figures.think_on_easy:.0%} on the easiest third of the levels, "
        f"{figures.think_on_hard:.0%} on the hardest third",
        f"{figures.condition}: accuracy {figures.accuracy_auto:.1%} against always-on's "
        f"{figures.accuracy_on:.1%}, with {figures.token_share:.0%} of its tokens",
    ]


def write_recipe_report(path: Path, recipe: Path, result: Any) -> Path:
    """Write OUT/report.md (whole or not at all); returns its path."""
    from trainer import run_dir

    root = path.parent
    lines = [f"# Recipe {recipe.stem}", "", f"`katpilot train run {recipe}`", ""]
    lines += ["| stage | wall time | what it did |", "|---|---|---|"]
    for stage in result.stages:
        time = "done before" if stage.skipped else f"{stage.seconds:.0f} s"
        lines.append(f"| [{stage.name}]({_rel(stage.out, root)}) | {time} | {stage.summary} |")
    lines += ["", f"Total: {sum(s.seconds for s in result.stages):.0f} s of wall time in this run.", ""]
    for stage in result.stages:
        report = stage.out / run_dir.REPORT_FILE
        plot = stage.out / run_dir.PLOT_FILE
        if stage.name in ("distill", "drill", "sft", "rl") and report.is_file():
            lines += [f"## {stage.name}", "", f"[report]({_rel(report, root)})", ""]
            if plot.is_file():
                lines += [f"![{stage.name} curves]({_rel(plot, root)})", ""]
    evaluation = result.evaluation
    if evaluation is not None:
        lines += _evaluation_section(evaluation, root)
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _evaluation_section(evaluation: Any, root: Path) -> list[str]:
    lines = ["## Evaluation", ""]
    for label, results, out in (
        ("exported model", evaluation.results, evaluation.out),
        ("baseline", evaluation.baseline, evaluation.baseline_out),
    ):
        if results is None:
            continue
        lines += [
            f"### {label}: `{results.run.get('model_path')}`",
            "",
            f"[report]({_rel(out / 'report.md', root)})",
            "",
        ]
        lines += ["| condition | accuracy | think-on rate | decided by the model | tokens per item |"]
        lines += ["|---|---|---|---|---|"]
        for s in results.shown_summaries():
            lines.append(
                f"| {s.condition} | {s.accuracy:.1%} ({s.correct}/{s.n}) | {s.think_on_rate:.0%} | "
                f"{s.decided_by_model_rate:.0%} | {s.mean_tokens:.1f} |"
            )
        lines.append("")
        figures = autothink_figures(results)
        if figures is not None:
            lines += [f"- {line}" for line in figure_lines(figures)] + [""]
        plot = out / "plot.png"
        if plot.is_file():
            lines += [f"![accuracy against tokens, {label}]({_rel(plot, root)})", ""]
    return lines


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)
