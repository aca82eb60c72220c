"""The Markdown report: the table a person reads first, the AutoThink trade, the sweep, failures."""

from __future__ import annotations

from katpilot.eval.results import EvalResults
from katpilot.eval.stats import MIN_PAIRS, Comparison, ConditionSummary, Interval

FAILURES_SHOWN = 15
ON_PAR_POINTS = 1.0  # "as accurate as always-on": within this many percentage points


def render_report(results: EvalResults, plot_file: str | None) -> str:
    run = results.run
    lines = [
        f"# katpilot eval: {results.suite} on {run.get('model')}",
        "",
        f"{results.items} items · profile {run.get('profile')} · temperature {run.get('temperature')}"
        f" · max tokens {run.get('max_tokens')} · think budget {run.get('budget') or 'none'}",
        "",
        "## Results",
        "",
        "| condition | accuracy (95% interval) | think on | decided by model | tokens / item (judge · think · answer) | latency mean / median |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(s) for s in results.shown_summaries()]
    lines += ["", "## AutoThink against always-on and always-off", ""]
    shown = headline_comparisons(results)
    if not shown:
        lines.append("Run `--think auto,on,off` to compare (auto needs at least one forced mode beside it).")
    if shown and not model_decided(results, shown[0].auto):
        lines += [NO_DECISION_NOTE, ""]
    if any(c.n < MIN_PAIRS for c in shown):
        lines += [f"Fewer than {MIN_PAIRS} paired items: no intervals for these differences.", ""]
    for c in shown:
        lines.append(
            f"- **{c.auto} vs always {c.against}** ({c.n} items): tokens {_ratio(c)}; "
            f"accuracy {100 * c.accuracy_difference:+.1f} points{_range(c.accuracy_difference_ci, 'pts', 100)}"
        )
    lines += _sweep_section(results)
    if plot_file:
        lines += ["", "## Accuracy against tokens", "", f"![accuracy against tokens]({plot_file})"]
    lines += _failures(results)
    lines += [
        "",
        "## Files",
        "",
        "- `results.json`: every summary and every per-item record (answer, verdict, reason, tokens, p(on)).",
        "- `records.jsonl`: the journal a rerun with the same `--out` resumes from.",
    ]
    return "\n".join(lines) + "\n"


def headline_comparisons(results: EvalResults) -> list[Comparison]:
    """auto at the configured threshold against on and off (the sweep's other points: its table)."""
    configured = f"auto@{results.run.get('threshold'):g}" if results.run.get("threshold") is not None else None
    mine = [c for c in results.comparisons if c.auto == configured]
    first = results.comparisons[0].auto if results.comparisons else None
    return mine or [c for c in results.comparisons if c.auto == first]


NO_DECISION_NOTE = (
    "No response under auto was decided by the model (a plain model, or no engine probabilities): "
    "auto is the model's own default here, so these differences are not AutoThink's judgement."
)


def model_decided(results: EvalResults, condition: str) -> bool:
    summary = results.summary(condition)
    return summary is not None and summary.decided_by_model_rate > 0


def _ratio(c: Comparison) -> str:
    if c.token_ratio is None:
        return "n/a (the other used no tokens)"
    return f"×{c.token_ratio:.2f}{_range(c.token_ratio_ci, '×')}"


def _row(s: ConditionSummary) -> str:
    seg = s.mean_segment_tokens
    return (
        f"| {s.condition} | {100 * s.accuracy:.1f}% ({s.correct}/{s.n}){_range(s.accuracy_ci, '%', 100)} "
        f"| {100 * s.think_on_rate:.0f}% | {100 * s.decided_by_model_rate:.0f}% "
        f"| {s.mean_tokens:.1f} ({seg['judge']:.1f} · {seg['think']:.1f} · {seg['answer']:.1f}) "
        f"| {s.mean_latency_s:.2f} s / {s.median_latency_s:.2f} s |"
    )


def _range(interval: Interval | None, unit: str, scale: float = 1.0) -> str:
    if interval is None:
        return ""
    if unit == "×":
        return f" ({interval.low:.2f}–{interval.high:.2f})"
    return f" [{scale * interval.low:.1f}, {scale * interval.high:.1f}]"


def _sweep_section(results: EvalResults) -> list[str]:
    sweep = results.sweep
    if sweep is None or len(sweep.thresholds) < 2:
        return []
    lines = ["", "## Threshold sweep", ""]
    if not sweep.available:
        lines.append(f"Unavailable: {sweep.why_not}.")
        return lines
    lines.append(
        f"{len(sweep.thresholds)} thresholds × {results.items} items = {sweep.records} records from "
        f"{sweep.generated} generated responses: a threshold that leads to the same decision reuses the response."
    )
    against_on = {c.auto: c for c in results.comparisons if c.against == "on"}
    lines += ["", "| threshold | accuracy | think on | tokens / item | tokens vs always on | accuracy vs always on |"]
    lines.append("|---|---|---|---|---|---|")
    for s in (s for s in results.summaries if s.think == "auto"):
        c = against_on.get(s.condition)
        versus = (_ratio(c), f"{100 * c.accuracy_difference:+.1f} points") if c else ("", "")
        lines.append(
            f"| {s.threshold:g} | {100 * s.accuracy:.1f}% | {100 * s.think_on_rate:.0f}% | {s.mean_tokens:.1f} "
            f"| {versus[0]} | {versus[1]} |"
        )
    if sweep.decided_without_p_on:
        lines.append(
            f"\n{sweep.decided_without_p_on} response(s) were decided by the model's own tag without p(on) "
            "(the engine gave none there): the same at every threshold."
        )
    if results.run.get("temperature"):
        lines.append(
            "\nSampled (temperature > 0): a reused response is one sample standing for every threshold with the same decision."
        )
    pick = suggest_threshold(results)
    if pick is not None:
        lines.append(
            f"\nCheapest threshold within {ON_PAR_POINTS:g} point of always-on accuracy: **{pick.threshold:g}** "
            f"({100 * pick.accuracy:.1f}%, {pick.mean_tokens:.1f} tokens per item)."
        )
    return lines


def suggest_threshold(results: EvalResults) -> ConditionSummary | None:
    """The auto threshold with the fewest tokens whose accuracy is on par with always-on (None without on)."""
    on = results.summary("on")
    autos = [s for s in results.summaries if s.think == "auto"]
    if on is None or not autos:
        return None
    par = [s for s in autos if 100 * (on.accuracy - s.accuracy) <= ON_PAR_POINTS]
    return min(par, key=lambda s: (s.mean_tokens, s.threshold or 0.0), default=None)


def _failures(results: EvalResults) -> list[str]:
    failed = [r for r in results.records if not r.passed and r.reused_from is None]
    if not failed:
        return []
    lines = ["", f"## Failures ({len(failed)} responses; the first {min(len(failed), FAILURES_SHOWN)})", ""]
    lines += ["| item | condition | mode | reason |", "|---|---|---|---|"]
    for r in failed[:FAILURES_SHOWN]:
        reason = (r.reason or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.item} | {r.condition} | {r.mode} | {reason} |")
    return lines
