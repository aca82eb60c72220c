"""The tagging rule: which mode a task's record teaches, from the teacher's pass rates in each mode.

After HiPO (the KAT team's follow-up to KAT-V1):
1. The teacher answers each task K times with thinking forced off and K times forced on; the
   verifier grades every answer; pass rate = passed / K per mode.
2. Think-off when its pass rate is within `margin` of think-on's or above it (thinking must pay by
   more than the margin to be taught); otherwise think-on.
3. A `random_share` of tasks (default 1%) takes a random mode instead, so both modes stay
   represented even where one always wins (the draw is seeded by the task id: reruns agree). A
   record says `chosen_by: random` only where the draw overturned the rule.
4. The record keeps the shortest verified answer of the chosen mode (fewest completion tokens).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from katpilot.terms import Mode

DEFAULT_MARGIN = 0.1
DEFAULT_RANDOM_SHARE = 0.01


@dataclass(frozen=True)
class Tagging:
    mode: Mode
    chosen_by: str  # "rates" (the rule) or "random" (the random share)


def rule_mode(off_rate: float, on_rate: float, margin: float = DEFAULT_MARGIN) -> Mode:
    """Step 2: think-off unless think-on's pass rate beats it by more than `margin`."""
    return "off" if off_rate >= on_rate - margin - 1e-9 else "on"


def choose_mode(
    task_id: str,
    off_rate: float,
    on_rate: float,
    margin: float = DEFAULT_MARGIN,
    random_share: float = DEFAULT_RANDOM_SHARE,
    seed: int = 0,
) -> Tagging:
    """Steps 2 and 3 for one task."""
    rng = random.Random(f"katpilot-tagging:{seed}:{task_id}")
    rule = rule_mode(off_rate, on_rate, margin)
    if rng.random() < random_share:
        mode: Mode = "on" if rng.random() < 0.5 else "off"
        return Tagging(mode, "random" if mode != rule else "rates")
    return Tagging(rule, "rates")
