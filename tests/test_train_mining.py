"""Training tasks mined from a repository, and the two verifiers they are graded with (ast, similar)."""

from __future__ import annotations

import ast
import re
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from index_fixtures import LANGUAGE_REPO, PLANTED_AWS, PLANTED_KEY, SECRET_REPO, write_repo

from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem, grade
from katpilot.eval.verify import Verdict, ast_match, extract_code, similarity_match
from katpilot.index import RepoIndex
from trainer.data.mining import MUTATIONS, mine_repository
from trainer.data.tasks import REPO_KINDS, Task

# Functions with docstrings, comparisons, integer bounds, several parameters and returns: every
# kind of task and every kind of bug has somewhere to come from.
PYTHON_FILES = {
    "py/ranges.py": '''\
"""Ranges and counters."""


def clamp(value: int, low: int, high: int) -> int:
    """Clamp a value into the closed range from low to high."""
    if value < low:
        return low
    if value > high:
        return high
    return value


def count_above(items: list[int], limit: int) -> int:
    """Count how many items are strictly above the limit."""
    total = 0
    for item in items:
        if item > limit:
            total = total + 1
    return total


def window(items: list[int], start: int, size: int) -> list[int]:
    """Return the slice of items that starts at start and holds size items."""
    end = start + size  # one past the last
    return items[start:end]


class Tally:
    """Counts events up to a maximum."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.count = 0

    def bump(self, step: int, times: int) -> bool:
        """Add the step several times and say whether the maximum is reached."""
        for _ in range(times):
            self.count = self.count + step
        return self.count >= self.maximum


def first_index(items: list[int], wanted: int) -> int:
    for i in range(len(items)):
        if items[i] == wanted:
            return i
    return -1
''',
    "py/report.py": """\
from ranges import clamp, count_above, window


def summary(items: list[int], low: int, high: int) -> str:
    kept = [clamp(i, low, high) for i in window(items, 0, 10)]
    return f"{count_above(kept, low)} of {len(kept)}"
""",
}

JAVASCRIPT_FILES = {
    "js/limits.js": """\
/** Clamp a value into the closed range from low to high. */
function clampValue(value, low, high) {
  if (value < low) {
    return low;
  }
  return value > high ? high : value;
}

// Count how many items are strictly above the limit.
const countAboveLimit = (items, limit) => {
  let total = 0;
  for (const item of items) {
    if (item > limit) total += 1;
  }
  return total;
};

module.exports = { clampValue, countAboveLimit };
""",
}

UNRELATED = "The weather in the mountains was cold and the trains ran late all week."


def mine(root: Path, cache: Path, seed: int = 0, per_kind: int | None = None) -> list[Task]:
    with RepoIndex(root, cache_path=cache) as index:
        return mine_repository(index, REPO_KINDS, seed=seed, per_kind=per_kind)


@pytest.fixture(scope="module")
def python_tasks(tmp_path_factory: pytest.TempPathFactory) -> list[Task]:
    root = write_repo(tmp_path_factory.mktemp("py") / "repo", PYTHON_FILES)
    return mine(root, root.parent / "cache.sqlite")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Task]]:
    """Every fixture language, the planted secrets and the files above, in one repository."""
    files = {**LANGUAGE_REPO, **SECRET_REPO, **PYTHON_FILES, **JAVASCRIPT_FILES}
    root = write_repo(tmp_path_factory.mktemp("mixed") / "repo", files)
    return root, mine(root, root.parent / "cache.sqlite")


def by_language(tasks: list[Task], language: str) -> list[Task]:
    return [t for t in tasks if t.item.meta["language"] == language]


def test_every_kind_is_mined_for_python_and_javascript(mixed: tuple[Path, list[Task]]) -> None:
    _, tasks = mixed
    assert {t.kind for t in by_language(tasks, "python")} == set(REPO_KINDS)
    assert {"complete", "fix", "docstring", "explain"} <= {t.kind for t in by_language(tasks, "javascript")}
    for task in tasks:
        assert task.source_file and task.source_file in task.id
        assert task.item.meta["kind"] == task.kind and task.item.meta["name"] == task.symbol
        assert task.kind == "question" or f"`{task.source_file}`" in task.item.prompt


def test_every_reference_passes_and_a_wrong_answer_fails(mixed: tuple[Path, list[Task]]) -> None:
    _, tasks = mixed
    for task in tasks:
        assert grade(task.item, task.reference).passed, task.id
        if task.kind in ("docstring", "explain"):
            wrong = UNRELATED
        elif task.kind == "fix":
            wrong = task.item.prompt  # the buggy function, as shown
        elif task.kind == "complete":
            wrong = task.item.prompt  # the signature with the body masked
        else:
            wrong = "It is somewhere else entirely."
        verdict = grade(task.item, wrong)
        assert not verdict.passed and verdict.reason, task.id


def test_a_changed_operator_fails_a_python_completion(python_tasks: list[Task]) -> None:
    completions = [t for t in python_tasks if t.kind == "complete" and re.search(r" [<>]=? ", t.item.expected)]
    assert completions
    for task in completions:
        assert task.item.verifier == "ast"
        assert grade(task.item, task.item.expected).passed  # unfenced and indented as written
        changed = re.sub(
            r" ([<>])(=?) ", lambda m: f" {'>' if m[1] == '<' else '<'}{m[2]} ", task.item.expected, count=1
        )
        assert grade(task.item, f"```python\n{changed}\n```") == Verdict(
            False, "ast", "the answer's code differs from the expected code"
        )


def test_all_four_bugs_are_planted_and_each_changes_the_code(python_tasks: list[Task]) -> None:
    fixes = [t for t in python_tasks if t.kind == "fix"]
    assert {t.id.rsplit(":", 1)[1] for t in fixes} == set(MUTATIONS)
    for task in fixes:
        buggy = extract_code(task.item.prompt)
        assert "has a bug" in task.item.prompt and buggy.strip() != task.item.expected.strip()
        assert ast.dump(ast.parse(buggy)) != ast.dump(ast.parse(textwrap.dedent(task.item.expected))), task.id
        assert not grade(task.item, task.item.prompt).passed


def test_javascript_bugs_are_rejected_although_one_token_away(mixed: tuple[Path, list[Task]]) -> None:
    _, tasks = mixed
    fixes = [t for t in by_language(tasks, "javascript") if t.kind == "fix"]
    assert fixes
    for task in fixes:
        assert task.item.verifier == "similar" and task.item.min_similarity > 0.9
        assert grade(task.item, task.reference).passed
        assert not grade(task.item, task.item.prompt).passed


def test_completion_masks_the_body_and_keeps_the_signature_and_doc(python_tasks: list[Task]) -> None:
    (task,) = [t for t in python_tasks if t.id == "complete:py/ranges.py:clamp"]
    shown = extract_code(task.item.prompt)
    assert shown == (
        "def clamp(value: int, low: int, high: int) -> int:\n"
        '    """Clamp a value into the closed range from low to high."""\n'
        "    ...\n"
    )
    assert task.reference == f"```python\n{task.item.expected.rstrip()}\n```"


def test_docstring_and_explain_hide_the_doc_and_grade_prose(python_tasks: list[Task]) -> None:
    docs = [t for t in python_tasks if t.kind in ("docstring", "explain")]
    assert {t.symbol for t in docs} == {"clamp", "count_above", "window", "Tally.bump"}  # first_index has none
    for task in docs:
        assert task.item.expected == task.reference
        assert task.reference not in task.item.prompt
        assert not grade(task.item, UNRELATED).passed
    (bump,) = [t for t in docs if t.id == "explain:py/ranges.py:Tally.bump"]
    answer = "It adds the step several times and says whether the maximum has been reached."
    assert grade(bump.item, answer).passed


def test_ids_are_unique_and_stable_for_a_seed(tmp_path: Path, mixed: tuple[Path, list[Task]]) -> None:
    root, tasks = mixed
    ids = [t.id for t in tasks]
    assert len(set(ids)) == len(ids)
    again = mine(root, tmp_path / "other-cache.sqlite")
    assert [t.id for t in again] == ids
    assert [t.item.prompt for t in again] == [t.item.prompt for t in tasks]
    assert "complete:py/ranges.py:Tally.bump" in ids and "docstring:js/cart.js:cartTotal" in ids


def test_per_kind_caps_each_kind(mixed: tuple[Path, list[Task]], tmp_path: Path) -> None:
    root, _ = mixed
    capped = mine(root, tmp_path / "cache.sqlite", seed=3, per_kind=2)
    assert Counter(t.kind for t in capped) == dict.fromkeys(REPO_KINDS, 2)


def test_planted_secrets_never_reach_a_task(mixed: tuple[Path, list[Task]]) -> None:
    _, tasks = mixed
    assert any(t.source_file == "config.py" for t in tasks)  # the file with a secret is mined, the secret not
    for task in tasks:
        for text in (task.item.prompt, task.item.expected, task.reference, *task.item.accepted):
            assert PLANTED_KEY not in text and PLANTED_AWS not in text and "PLANTED" not in text, task.id


def test_an_unknown_kind_is_refused(mixed: tuple[Path, list[Task]], tmp_path: Path) -> None:
    root, _ = mixed
    with RepoIndex(root, cache_path=tmp_path / "cache.sqlite") as index, pytest.raises(KatpilotError, match="refactor"):
        mine_repository(index, ["refactor"])


# --- the verifiers ------------------------------------------------------------------------------------

REFERENCE = '''\
def scale(values, factor):
    """Every value times the factor."""
    return [v * factor for v in values if v > 0]
'''


@pytest.mark.parametrize(
    "answer",
    [
        REFERENCE,
        f"Here it is:\n\n```python\n{REFERENCE}```\n",
        "def scale(values,factor):\n  # keep the positive ones\n  return [v*factor\n          for v in values if v>0]",
        'def scale(values, factor):\n    """Another docstring."""\n    return [v * factor for v in values if (v > 0)]',
        "def scale(values, factor):\n    return [v * factor for v in values if v > 0]",
        textwrap.indent(REFERENCE, "    "),
    ],
)
def test_ast_match_ignores_formatting_comments_and_docstrings(answer: str) -> None:
    assert ast_match(answer, REFERENCE) == Verdict(True, "ast")


def test_ast_match_fails_a_changed_operator_and_says_where_code_does_not_parse() -> None:
    changed = REFERENCE.replace("v > 0", "v >= 0")
    assert ast_match(changed, REFERENCE) == Verdict(False, "ast", "the answer's code differs from the expected code")
    broken = "def scale(values, factor):\n    return [v * factor for v in values if v > 0\n"
    verdict = ast_match(broken, REFERENCE)
    assert not verdict.passed and verdict.reason and verdict.reason.startswith("the answer does not parse (line ")
    assert not ast_match("\x00", REFERENCE).passed
    assert not ast_match("", REFERENCE).passed
    item = EvalItem("x", "p", "ast", expected=REFERENCE)
    assert grade(item, REFERENCE).passed and not grade(item, changed).passed


def test_similarity_match_passes_at_the_threshold_and_fails_below() -> None:
    # Four tokens each, three shared: ratio 2 * 3 / 8 = 0.75.
    assert similarity_match("a b c d", "a b c e", 0.75) == Verdict(True, "similar")
    assert similarity_match("a b c d", "a b c e", 0.76) == Verdict(
        False, "similar", "similarity 0.750 is below the threshold 0.76"
    )
    assert similarity_match("Adds  MONEY.", "adds money .", 1.0).passed  # case and spacing do not count
    assert similarity_match("```js\nreturn a+b;\n```", "return a + b;", 1.0).passed  # the fenced code is compared
    assert not similarity_match("", "something", 0.1).passed
    item = EvalItem("x", "p", "similar", expected="a b c e", min_similarity=0.75)
    assert grade(item, "a b c d").passed and not grade(item, "a x y z").passed
    assert EvalItem("y", "p", "similar").min_similarity == 0.8


def test_similarity_match_stays_fast_on_long_texts() -> None:
    long = " ".join(["x"] * 50_000)
    started = time.perf_counter()
    assert similarity_match(long, long + " y", 0.9).passed
    assert time.perf_counter() - started < 3
