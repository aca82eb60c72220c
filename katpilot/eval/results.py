"""A run's results: the per-condition summaries, auto against on and off, and what the sweep cost.

Built from the journal's records only, so a resumed run reports the same as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from katpilot.eval.records import Record
from katpilot.eval.runner import Condition, RunCounts
from katpilot.eval.stats import Comparison, ConditionSummary, compare, summarise
from katpilot.eval.suites import Suite


@dataclass(frozen=True)
class SweepInfo:
    """Whether the threshold sweep means anything for this model, and what it cost."""

    thresholds: list[float]
    available: bool
    why_not: str | None
    records: int  # auto records (items x thresholds)
    generated: int  # of which generated; the rest reuse a response with the same decision
    decided_without_p_on: int = 0  # auto responses whose model wrote its own decision tag (no p(on))


@dataclass
class EvalResults:
    run: dict[str, Any]
    suite: str
    items: int
    summaries: list[ConditionSummary]
    comparisons: list[Comparison]
    sweep: SweepInfo | None
    counts: RunCounts
    records: list[Record] = field(default_factory=list)

    def summary(self, label: str) -> ConditionSummary | None:
        return next((s for s in self.summaries if s.condition == label), None)

    def shown_summaries(self) -> list[ConditionSummary]:
        """What a person is shown: every condition, but one auto row when no threshold changes anything."""
        if self.sweep is None or self.sweep.available:
            return list(self.summaries)
        autos = [s for s in self.summaries if s.think == "auto"]
        configured = next((s for s in autos if s.threshold == self.run.get("threshold")), autos[0] if autos else None)
        return [s for s in self.summaries if s.think != "auto" or s is configured]

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "suite": self.suite,
            "items": self.items,
            "conditions": [asdict(s) for s in self.summaries],
            "autothink": [asdict(c) for c in self.comparisons],
            "sweep": asdict(self.sweep) if self.sweep else None,
            "counts": asdict(self.counts),
            "records": [r.to_json() for r in self.records],
        }


def build_results(
    run: dict[str, Any],
    suite: Suite,
    conditions: list[Condition],
    records: dict[tuple[str, str], Record],
    counts: RunCounts,
    decision: str,
) -> EvalResults:
    """Summaries of the suite's items under the asked conditions (`decision`: the profile's kind)."""
    ids = [item.id for item in suite.items]
    by_condition = {c.label: [records[(i, c.label)] for i in ids if (i, c.label) in records] for c in conditions}
    summaries = [
        summarise(c.label, c.think, c.threshold, by_condition[c.label]) for c in conditions if by_condition[c.label]
    ]
    autos = [c for c in conditions if c.think == "auto"]
    comparisons = []
    for auto in autos:
        for forced in ("on", "off"):
            if by_condition.get(forced) and by_condition[auto.label]:
                found = compare(auto.label, forced, by_condition[auto.label], by_condition[forced])
                if found is not None:
                    comparisons.append(found)
    sweep = None
    if autos:
        auto_records = [r for c in autos for r in by_condition[c.label]]
        why = _sweep_unavailable(decision, auto_records)
        sweep = SweepInfo(
            thresholds=[c.threshold for c in autos if c.threshold is not None],
            available=why is None,
            why_not=why,
            records=len(auto_records),
            generated=sum(1 for r in auto_records if r.reused_from is None),
            decided_without_p_on=sum(
                1 for r in auto_records if r.reused_from is None and r.decided_by == "model" and r.p_on is None
            ),
        )
    kept = [records[(i, c.label)] for i in ids for c in conditions if (i, c.label) in records]
    return EvalResults(run, suite.name, len(ids), summaries, comparisons, sweep, counts, kept)


def _sweep_unavailable(decision: str, auto_records: list[Record]) -> str | None:
    """Why no threshold changes anything for this model, or None when the sweep is meaningful."""
    if decision == "none":
        return "the model has no decision point (profile plain): every threshold gives the same answers"
    if any(r.decided_by == "model" and r.p_on is None for r in auto_records) and not any(
        r.p_on is not None for r in auto_records
    ):
        return (
            "p(on) is not available from this engine (the server returned no logprobs): "
            "the model wrote its own decision, so every threshold gives the same answers"
        )
    if auto_records and not any(r.p_on is not None for r in auto_records):
        return "no response reached the decision point, so no threshold applied"
    return None
