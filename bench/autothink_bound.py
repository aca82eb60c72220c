"""The best per-level think rule an evaluation's own answers allow, under the tiny recipe's bars.

    python bench/autothink_bound.py runs/tiny-autothink/eval/tiny-autothink [more eval dirs ...]

Why: issue 20 asks auto mode for always-on's accuracy minus 2 points at no more than 70% of its
tokens, and a think-on rate on the hardest third of the ladder at least twice the easiest third's.
Whether any judge could meet those bars with this model is a question about its always-on and
always-off answers alone: this tries every rule "think on these levels, answer the others directly"
(2^levels of them), costs each item the auto condition's judge plus the chosen mode's completion,
and prints the most accurate rules within the token bar, with and without the think-on bar. The
rules are chosen on the very items they are scored on, so they bound from above what a judge that
learnt its rule elsewhere can reach. Several evaluation directories (the same model on other
`--seed`s of the ladder) are pooled: ten items a level leave the hindsight rules much luck.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from katpilot.eval.command import RESULTS_FILE
from katpilot.eval.records import RECORDS_FILE, Record, read_journal
from katpilot.eval.suites import load_suite
from trainer.recipe_report import level_thirds

TOKEN_BAR = 0.70  # auto's tokens against always-on's
ACCURACY_BAR = 0.02  # auto's accuracy may fall this far below always-on's


@dataclass(frozen=True)
class Rule:
    thinks_on: tuple[int, ...]  # the levels answered with thinking
    passed: int
    token_share: float  # against always-on's tokens
    think_on_bar: bool  # hardest third's think-on rate >= 2x the easiest third's, and above 0


def _levelled_items(out: Path) -> dict[tuple[str, str], tuple[int, dict[str, Record]]]:
    """One evaluation's items with auto, on and off records: (dir, item) -> (level, records by condition)."""
    run = json.loads((out / RESULTS_FILE).read_text())["run"]  # the finished evaluation's settings
    suite = load_suite(run["suite"], seed=int(run.get("suite_seed") or 0))
    levels = {item.id: item.level for item in suite.items if item.level is not None}
    by_item: dict[str, dict[str, Record]] = {}
    for _, row in read_journal(out / RECORDS_FILE, out):
        record = Record.from_json(row)
        by_item.setdefault(record.item, {})["auto" if record.think == "auto" else record.condition] = record
    return {
        (str(out), i): (levels[i], r) for i, r in by_item.items() if i in levels and {"auto", "on", "off"} <= r.keys()
    }


def rules(outs: list[Path]) -> tuple[list[Rule], int, int]:
    """Every per-level rule over the pooled evaluations, with always-on's passes and the item count."""
    pooled: dict[tuple[str, str], tuple[int, dict[str, Record]]] = {}
    for out in outs:
        found_here = _levelled_items(out)
        if not found_here:
            raise SystemExit(f"{out}: no item of a levelled suite has auto, on and off records")
        pooled.update(found_here)
    levels = {key: level for key, (level, _) in pooled.items()}
    items = {key: records for key, (_, records) in pooled.items()}
    ranked = sorted({levels[i] for i in items})
    easy, hard = level_thirds(set(ranked))  # the recipe's own definition of the thirds
    on_tokens = sum(r["on"].tokens["completion"] for r in items.values())
    on_passed = sum(r["on"].passed for r in items.values())
    judge = sum(r["auto"].tokens.get("judge", 0) for r in items.values())
    found = []
    for choice in itertools.product((False, True), repeat=len(ranked)):
        thinking = {level for level, on in zip(ranked, choice, strict=True) if on}
        chosen = [r["on" if levels[i] in thinking else "off"] for i, r in items.items()]
        tokens = judge + sum(r.tokens["completion"] for r in chosen)
        easy_rate = sum(level in thinking for level in easy) / len(easy)
        hard_rate = sum(level in thinking for level in hard) / len(hard)
        found.append(
            Rule(
                thinks_on=tuple(sorted(thinking)),
                passed=sum(r.passed for r in chosen),
                token_share=tokens / on_tokens,
                think_on_bar=hard_rate >= 2 * easy_rate and hard_rate > 0,
            )
        )
    return found, on_passed, len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "eval_dirs", type=Path, nargs="+", help="`katpilot eval` output directories with auto, on and off (pooled)"
    )
    parser.add_argument("--show", type=int, default=3, help="rules shown per bar")
    args = parser.parse_args()
    found, on_passed, items = rules(args.eval_dirs)
    print(
        f"always on: {on_passed}/{items} ({on_passed / items:.1%}); the accuracy bar: {on_passed / items - ACCURACY_BAR:.1%}"
    )
    for title, keep in (("within the token bar", False), ("within the token and think-on bars", True)):
        within = [r for r in found if r.token_share <= TOKEN_BAR and (r.think_on_bar or not keep)]
        within.sort(key=lambda r: (-r.passed, r.token_share))
        print(f"best rules {title}:")
        for rule in within[: args.show]:
            accuracy = rule.passed / items
            verdict = "meets" if accuracy >= on_passed / items - ACCURACY_BAR else "misses"
            print(
                f"  think on levels {list(rule.thinks_on)}: {rule.passed}/{items} ({accuracy:.1%}), "
                f"{rule.token_share:.0%} of always-on's tokens, {verdict} the accuracy bar"
            )


if __name__ == "__main__":
    main()
