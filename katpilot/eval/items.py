"""An evaluation item (a prompt and how to check its answer) and `grade`, the one way to check it.

Every suite, bundled or loaded from a file, becomes a list of `EvalItem`; the runner never needs to
know where an item came from. The trainer's data stage grades with the same `grade`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from katpilot.eval.verify import (
    Verdict,
    ast_match,
    exact_match,
    extract_code,
    mentions_any,
    numeric_match,
    python_tests,
    similarity_match,
)

VerifierName = Literal["exact", "numeric", "mentions", "python_tests", "ast", "similar"]


@dataclass(frozen=True)
class EvalItem:
    """One question and what a right answer is."""

    id: str  # unique within its suite; the key of its records (and of resuming)
    prompt: str  # the user message the model gets
    verifier: VerifierName
    expected: str = ""  # exact / numeric: the answer; ast / similar: the code or text to match
    accepted: tuple[str, ...] = ()  # mentions: any of these names passes
    tests: str = ""  # python_tests: assert lines, or HumanEval's `def check(candidate)`
    entry_point: str | None = None  # python_tests: the function the answer must define
    humaneval_check: bool = False  # tests define check(candidate), called with the entry point
    prelude: str = ""  # python_tests: code the answer continues (HumanEval's prompt), kept before it
    level: int | None = None  # difficulty, where the suite grades it
    min_similarity: float = 0.8  # similar: the least token similarity (0..1) that passes
    code_language: str = ""  # similar: the texts are code in this index language (comments dropped); "": prose
    meta: dict[str, str] = field(default_factory=dict)  # what a generated item asks about (repo: kind, name)


def item_to_json(item: EvalItem) -> dict[str, Any]:
    """The item as a JSON object (a training record carries it, so RL grades as eval does)."""
    return asdict(item)


def item_from_json(data: object) -> EvalItem:
    """The item a JSON object describes; ValueError naming the field that is wrong."""
    if not isinstance(data, dict):
        raise ValueError("item must be an object")
    known = {f.name for f in fields(EvalItem)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"item has unknown fields {', '.join(unknown)}")
    for name in ("id", "prompt"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f"item.{name} must be a non-empty string")
    if data.get("verifier") not in get_args(VerifierName):
        raise ValueError(f"item.verifier must be one of {', '.join(get_args(VerifierName))}")
    values = dict(data)
    if "accepted" in values:
        values["accepted"] = tuple(values["accepted"] or ())
    try:
        return EvalItem(**values)
    except TypeError as exc:
        raise ValueError(f"item is malformed ({exc})") from None


def grade(item: EvalItem, answer: str) -> Verdict:
    """The verdict on `answer` by the item's verifier (never raises for anything in the answer).

    The verifiers handle what answers hold; anything they did not foresee (a lone surrogate a
    server sent, a number past Python's limits) fails the item with the reason, so a run goes on
    and a resumed run does not stop at the same answer again.
    """
    try:
        return _grade(item, answer)
    except Exception as exc:
        return Verdict(False, item.verifier, f"the answer could not be checked ({type(exc).__name__}: {exc})"[:300])


def _grade(item: EvalItem, answer: str) -> Verdict:
    if item.verifier == "exact":
        return exact_match(answer, item.expected)
    if item.verifier == "numeric":
        return numeric_match(answer, item.expected)
    if item.verifier == "mentions":
        return mentions_any(answer, item.accepted)
    if item.verifier == "ast":
        return ast_match(answer, item.expected)
    if item.verifier == "similar":
        return similarity_match(answer, item.expected, item.min_similarity, item.code_language or None)
    return python_tests(
        program_for(item, answer),
        item.tests,
        entry_point=item.entry_point if item.humaneval_check else None,
        extract=False,
    )


def program_for(item: EvalItem, answer: str) -> str:
    """The candidate program: the answer's code, after the prelude it continues (if any).

    An answer that defines the entry point itself is whole: it goes after the prelude, which then only
    lends its imports and helpers (a HumanEval prompt is valid code on its own: a docstring is a
    body). An answer that does not is taken as the body the prelude's signature is waiting for.
    """
    code = extract_code(answer, item.entry_point)
    if not item.prelude:
        return code
    if item.entry_point and _defines(code, item.entry_point):
        return f"{item.prelude.rstrip()}\n\n\n{code}"
    return item.prelude.rstrip("\n") + "\n" + _as_body(code, _body_indent(item.prelude))


def _body_indent(prelude: str) -> int:
    """The indentation the prelude's function body uses (its docstring's last line), else 4."""
    last = next((line for line in reversed(prelude.splitlines()) if line.strip()), "")
    indent = len(last) - len(last.lstrip())
    return indent or 4


def _as_body(code: str, indent: int) -> str:
    """Body code indented under the prelude's signature.

    The session strips an answer's leading whitespace (it is format, not content), so a body comes
    back with its first line flush left: that line takes the body's indentation when the lines
    after it are indented at least that far (nested blocks, continuation lines), and a body with
    lines flush left is indented as a whole.
    """
    lines = code.strip("\n").splitlines()
    if not lines or lines[0][:1] in (" ", "\t"):
        return code
    rest = [len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()]
    pad = " " * indent
    if rest and min(rest) >= indent:
        return pad + "\n".join(lines) + "\n"
    return "".join(f"{pad}{line}\n" for line in lines)


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", code, re.MULTILINE) is not None
