"""The bundled code suite: graded Python tasks, each with unit tests run in the sandbox.

The tasks live in `katpilot/eval/data/code_tasks.jsonl` (written by us, with a reference solution
each; tests/test_code_tasks.py proves every solution passes and a wrong one fails).
"""

from __future__ import annotations

import json
from pathlib import Path

from katpilot.eval.items import EvalItem

TASKS_FILE = Path(__file__).resolve().parent.parent / "data" / "code_tasks.jsonl"
INSTRUCTION = "Reply with the complete code in one ```python block."


def code_tasks() -> list[EvalItem]:
    """Every bundled task, levels taken in turn (1, 2, ... 5, 1, 2, ...) so that `--limit` spans them."""
    items: list[EvalItem] = []
    for line in TASKS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        task = json.loads(line)
        items.append(
            EvalItem(
                id=task["id"],
                prompt=f"{task['prompt']}\n\n{INSTRUCTION}",
                verifier="python_tests",
                tests=task["tests"],
                entry_point=task["entry_point"],
                level=task["level"],
            )
        )
    rank: dict[int | None, int] = {}
    order = []
    for item in items:
        rank[item.level] = rank.get(item.level, 0) + 1
        order.append((rank[item.level], item.level or 0, item))
    return [item for *_, item in sorted(order, key=lambda t: (t[0], t[1]))]
