"""The dataset card (`README.md` of the dataset directory): counts, rejections, the rule, a record.

Computed from the files themselves (the dataset and the tasks' outcomes), so its counts are the
records' and a resumed run's card covers the whole run. The YAML header names the data file, so
`datasets.load_dataset(DIR)` finds it.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from trainer.data import tagging
from trainer.data.builder import Outcome

RULE = (tagging.__doc__ or "").split("\n", 1)[1].strip()


def render_card(name: str, run: dict[str, Any], records: list[dict[str, Any]], outcomes: list[Outcome]) -> str:
    """The card's Markdown."""
    modes = Counter(r["mode"] for r in records)
    total = len(records)
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files: records.jsonl",
        "tags: [katpilot, autothink, dual-regime]",
        "---",
        f"# {name}: a dual-regime (AutoThink) dataset",
        "",
        f"Built by `katpilot train data` from {run.get('repo') or 'bundled suites'} with the teacher "
        f"`{run.get('teacher')}` (critic: `{run.get('critic') or 'none'}`), {run.get('votes')} answers per mode.",
        "",
        f"- records: **{total}** (think-on {modes['on']}, think-off {modes['off']}; "
        f"on share {_share(modes['on'], total)})",
        f"- tasks: {len(outcomes)} ({sum(o.status == 'kept' for o in outcomes)} kept, "
        f"{sum(o.status == 'dropped' for o in outcomes)} dropped)",
        f"- critic rejections: {sum(o.critic_rejections for o in outcomes)}",
        f"- records withheld by the secret filter: {sum(o.withheld for o in outcomes)}",
        f"- records by the random share: {sum(r['chosen_by'] == 'random' for r in records)}; "
        f"intent records: {sum(r['chosen_by'] == 'intent' for r in records)}; "
        f"answers from the ground truth (teacher never right): {sum(r['answer_from'] == 'reference' for r in records)}",
        "",
        "## Records per task kind",
        "",
        "| kind | records | think-on | think-off | tasks dropped |",
        "|---|---:|---:|---:|---:|",
    ]
    kinds = sorted({r["kind"] for r in records} | {o.kind for o in outcomes})
    for kind in kinds:
        of_kind = [r for r in records if r["kind"] == kind]
        on = sum(r["mode"] == "on" for r in of_kind)
        dropped = sum(o.kind == kind and o.status == "dropped" for o in outcomes)
        lines.append(f"| {kind} | {len(of_kind)} | {on} | {len(of_kind) - on} | {dropped} |")
    why = Counter(o.why for o in outcomes if o.status == "dropped")
    if why:
        lines += ["", "## Why tasks were dropped", ""]
        lines += [f"- {reason}: {count}" for reason, count in why.most_common()]
    lines += ["", "## The tagging rule", "", RULE, ""]
    lines += [
        f"Settings: margin {run.get('margin')}, random share {run.get('random_share')}, "
        f"intent share {run.get('intent_share')}, critic retries {run.get('retries')}.",
        "",
    ]
    if records:
        sample = next((r for r in records if r["mode"] == "on"), records[0])
        lines += ["## A record", "", "```json", json.dumps(sample, indent=1, ensure_ascii=False), "```", ""]
    return "\n".join(lines)


def _share(part: int, total: int) -> str:
    return f"{100 * part / total:.0f}%" if total else "n/a"
