"""Standard suites from a local JSONL file: HumanEval, MBPP and GSM8K shapes, told apart by their fields.

Nothing is downloaded: the user points at a file they have. The shape is read from the first record;
every record must then have that shape's fields, and a file that fits no shape is one error naming
the fields it lacks, with the line.
"""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem
from katpilot.eval.verify import extract_number

# The fields each shape needs (others are ignored).
SHAPES: dict[str, tuple[str, ...]] = {
    "humaneval": ("task_id", "prompt", "test", "entry_point"),
    "mbpp": ("text", "test_list"),
    "gsm8k": ("question", "answer"),
}
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function in one ```python block."
)
MBPP_INSTRUCTION = "Reply with the complete code in one ```python block. Your code should pass these tests:"
GSM8K_INSTRUCTION = "Answer with the final number alone on the last line."


class SuiteFileError(KatpilotError):
    """A suite file that is missing, unreadable or of no known shape."""


class _BadField(Exception):
    """A record's field of the wrong type (the loader adds the file and line)."""


def load_jsonl_suite(path: Path) -> tuple[str, list[EvalItem]]:
    """The file's shape ("humaneval", "mbpp" or "gsm8k") and its items, in file order."""
    records = jsonl_objects(path)
    if not records:
        raise SuiteFileError(f"suite file {path} has no records", "give a JSONL file with one JSON object per line")
    shape = _shape_of(path, *records[0])
    items = []
    seen: set[str] = set()
    for line_no, record in records:
        missing = [f for f in SHAPES[shape] if f not in record]
        if missing:
            raise SuiteFileError(
                f"{path} line {line_no}: a {shape} record without {', '.join(missing)}",
                f"every record of a {shape} file needs {', '.join(SHAPES[shape])}",
            )
        try:
            item = _ITEM_MAKERS[shape](record, line_no)
        except _BadField as exc:
            raise SuiteFileError(f"{path} line {line_no}: {exc}", f"fix the record (a {shape} file)") from None
        if item.id in seen:
            raise SuiteFileError(
                f"{path} line {line_no}: the id {item.id!r} is used twice", "give each record its own id"
            )
        seen.add(item.id)
        items.append(item)
    return shape, items


def jsonl_objects(path: Path, what: str = "suite file") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a user's JSONL file; any problem is one line.

    Shared by eval's suite files and the trainer's prompt and chat files (`what` names the file).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of line 1
    except FileNotFoundError:
        raise SuiteFileError(f"{what} {path} does not exist", "give the path of a JSONL file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteFileError(f"cannot read {what} {path} ({exc})", "give a readable UTF-8 JSONL file") from None
    records = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SuiteFileError(
                f"{path} line {line_no} is not JSON ({exc.msg})", "one JSON object per line (JSONL)"
            ) from None
        if not isinstance(record, dict):
            raise SuiteFileError(f"{path} line {line_no} is not a JSON object", "one JSON object per line (JSONL)")
        records.append((line_no, record))
    return records


def _shape_of(path: Path, line_no: int, record: dict[str, Any]) -> str:
    """The shape whose fields the record has; else an error naming what the closest shape lacks."""
    for shape, fields in SHAPES.items():
        if all(f in record for f in fields):
            return shape
    lacking = {shape: [f for f in fields if f not in record] for shape, fields in SHAPES.items()}
    closest = min(lacking, key=lambda s: len(lacking[s]))
    told = "; ".join(f"{shape} needs {', '.join(missing)}" for shape, missing in lacking.items())
    raise SuiteFileError(
        f"{path} line {line_no}: not a known suite shape (closest: {closest}, missing {', '.join(lacking[closest])})",
        f"records must be HumanEval, MBPP or GSM8K shaped: {told}",
    )


def _text(record: dict[str, Any], name: str, line_no: int) -> str:
    value = record[name]
    if not isinstance(value, str):
        raise _BadField(f"{name} must be a string, not {type(value).__name__}")
    return value


def _humaneval(record: dict[str, Any], line_no: int) -> EvalItem:
    prompt = _text(record, "prompt", line_no)
    entry_point = _text(record, "entry_point", line_no)
    if not entry_point.isidentifier():
        raise _BadField(f"entry_point {entry_point!r} is not a Python function name")
    return EvalItem(
        id=str(record["task_id"]),
        prompt=f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prompt.rstrip()}\n```",
        verifier="python_tests",
        tests=_text(record, "test", line_no),
        entry_point=entry_point,
        humaneval_check=True,
        prelude=prompt,
    )


_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\(")
_NOT_ENTRY = frozenset(dir(builtins)) | {"assert", "not", "and", "or", "in", "is", "lambda"}


def _entry_point(test: str) -> str | None:
    """The function an MBPP assert tests: its first call that is not a builtin (`sorted(f(x))` -> f)."""
    return next((name for name in _CALL.findall(test) if name not in _NOT_ENTRY), None)


def _mbpp(record: dict[str, Any], line_no: int) -> EvalItem:
    tests = record["test_list"]
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests) or not tests:
        raise _BadField("test_list must be a non-empty list of strings")
    setup: list[str] = []  # MBPP's optional imports (a list) and setup code (a string)
    for key in ("test_imports", "test_setup_code"):
        value = record.get(key)
        if isinstance(value, list):
            setup += [str(v) for v in value]
        elif isinstance(value, str) and value.strip():
            setup.append(value)
    text = _text(record, "text", line_no)
    return EvalItem(
        id=str(record.get("task_id", f"line-{line_no}")),
        prompt=f"{text}\n{MBPP_INSTRUCTION}\n" + "\n".join(tests),
        verifier="python_tests",
        tests="\n".join(setup + tests),
        entry_point=_entry_point(tests[0]),
    )


def _gsm8k(record: dict[str, Any], line_no: int) -> EvalItem:
    answer = _text(record, "answer", line_no)
    if extract_number(answer) is None:
        raise _BadField(f"the answer {answer[-40:]!r} has no final number (GSM8K ends it with '#### N')")
    return EvalItem(
        id=str(record.get("id", record.get("task_id", f"line-{line_no}"))),
        prompt=f"{_text(record, 'question', line_no)}\n{GSM8K_INSTRUCTION}",
        verifier="numeric",
        expected=answer,
    )


_ITEM_MAKERS = {"humaneval": _humaneval, "mbpp": _mbpp, "gsm8k": _gsm8k}
