"""The bundled code suite's data is sound: well formed, every reference solution passes, a do-nothing answer fails.

A task whose tests its own solution fails would mark right answers wrong, and tests that nothing fails
would mark every answer right; either way the suite would measure nothing. Each check runs the real
sandbox verifier (`python_tests`), so what passes here is what passes in `katpilot eval`.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import katpilot.eval
from katpilot.eval.verify import python_tests

TASKS_FILE = Path(katpilot.eval.__file__).parent / "data" / "code_tasks.jsonl"
KEYS = {"id": str, "level": int, "prompt": str, "entry_point": str, "tests": str, "solution": str}
ID = re.compile(r"code-(\d{3})-[a-z0-9]+(?:-[a-z0-9]+)*")


def _load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in TASKS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


TASKS = _load()
BY_ID = {task["id"]: task for task in TASKS}


def _defines(code: str, name: str) -> ast.stmt | None:
    """The top-level `def` or `class` of `name` in `code`, or None."""
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return node
    return None


def _do_nothing(task: dict[str, Any]) -> str:
    """A wrong answer that defines the entry point (a class when the solution's is one) and does nothing."""
    name = task["entry_point"]
    if isinstance(_defines(task["solution"], name), ast.ClassDef):
        return (
            f"class {name}:\n"
            "    def __init__(self, *args, **kwargs):\n"
            "        pass\n\n"
            "    def __getattr__(self, attribute):\n"
            "        return lambda *args, **kwargs: None\n"
        )
    return f"def {name}(*args, **kwargs):\n    return None\n"


def test_the_file_is_well_formed() -> None:
    assert len(TASKS) >= 40
    for task in TASKS:
        assert set(task) == set(KEYS), task.get("id")
        for key, kind in KEYS.items():
            assert type(task[key]) is kind, (task["id"], key)
            if kind is str:
                assert task[key].strip(), (task["id"], key)
    ids = [task["id"] for task in TASKS]
    assert len(set(ids)) == len(ids)
    numbers = []
    for task_id in ids:
        match = ID.fullmatch(task_id)
        assert match, task_id
        numbers.append(int(match.group(1)))
    assert numbers == list(range(1, len(TASKS) + 1)), "ids are numbered 001, 002, ... in file order"


def test_levels_cover_one_to_five_in_order_of_difficulty() -> None:
    levels = [task["level"] for task in TASKS]
    counts = Counter(levels)
    assert set(counts) == {1, 2, 3, 4, 5}
    assert all(count >= 5 for count in counts.values()), counts
    assert levels == sorted(levels), "levels never go down in file order"


@pytest.mark.parametrize("task_id", list(BY_ID))
def test_the_task_reads_right(task_id: str) -> None:
    task = BY_ID[task_id]
    name = task["entry_point"]
    prompt = task["prompt"]
    assert f"`{name}(" in prompt, "the prompt names the entry point's signature"
    assert prompt.isascii()
    assert not re.search(r"\b(?:tests?|tested|asserts?)\b", prompt, re.IGNORECASE), "the prompt gives away no tests"
    assert _defines(task["solution"], name) is not None, "the solution defines the entry point"
    tests = ast.parse(task["tests"])
    asserts = sum(isinstance(node, ast.Assert) for node in ast.walk(tests))
    assert 3 <= asserts <= 8, asserts
    called = {
        node.func.id for node in ast.walk(tests) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    called |= {node.id for node in ast.walk(tests) if isinstance(node, ast.Name)}
    assert name in called, "the tests use the entry point by name"
    assert "check" not in called, "MBPP-style asserts, not a check(candidate) wrapper"


@pytest.mark.parametrize("task_id", list(BY_ID))
def test_the_reference_solution_passes(task_id: str) -> None:
    task = BY_ID[task_id]
    verdict = python_tests(task["solution"], task["tests"], timeout_s=5)
    assert verdict.passed, verdict.reason


@pytest.mark.parametrize("task_id", list(BY_ID))
def test_a_do_nothing_answer_fails(task_id: str) -> None:
    task = BY_ID[task_id]
    verdict = python_tests(_do_nothing(task), task["tests"], timeout_s=5)
    assert not verdict.passed
    assert verdict.reason, "a failed verdict says why"
