"""Training tasks mined from a repository, and the verifiers they are graded with (generated tests, ast, similar)."""

from __future__ import annotations

import ast
import random
import re
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from index_fixtures import LANGUAGE_REPO, PLANTED_AWS, PLANTED_KEY, SECRET_REPO, write_repo
from train_fixtures import PLANTED_SECRET
from train_fixtures import write_repo as write_shop

import trainer.data.mining as mining
from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem, grade
from katpilot.eval.suites.repo import questions_from_index
from katpilot.eval.verify import (
    Verdict,
    ast_match,
    extract_code,
    similarity_match,
    strip_comments,
    text_similarity,
)
from katpilot.gate import KAT_TAGS, has_tag
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
    assert {t.item.meta["check"] for t in completions} == {"ast", "generated-tests"}  # Tally.bump is a method
    for task in completions:
        assert task.item.verifier == ("ast" if task.item.meta["check"] == "ast" else "python_tests")
        assert grade(task.item, task.item.expected).passed  # unfenced and indented as written
        changed = re.sub(
            r" ([<>])(=?) ", lambda m: f" {'>' if m[1] == '<' else '<'}{m[2]} ", task.item.expected, count=1
        )
        verdict = grade(task.item, f"```python\n{changed}\n```")
        assert not verdict.passed, task.id
        if task.item.verifier == "ast":
            assert verdict == Verdict(False, "ast", "the answer's code differs from the expected code")


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


def _lcs_by_table(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous, row = row, [0]
        for j, y in enumerate(b):
            row.append(previous[j] + 1 if x == y else max(previous[j + 1], row[j]))
    return row[-1]


def test_text_similarity_is_twice_the_longest_common_subsequence_over_the_lengths() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 25))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        if a or b:
            expected = 2 * _lcs_by_table(a, b) / (len(a) + len(b))
            assert text_similarity(" ".join(a), " ".join(b)) == pytest.approx(expected), (a, b)
    assert text_similarity("", "") == 1.0
    assert text_similarity("a b", "") == 0.0


def test_similarity_match_decides_repetitive_texts_at_the_token_cap() -> None:
    # difflib's SequenceMatcher took minutes on this pair (cubic on repeated tokens); the LCS is exact:
    # half of each side matches, so the ratio is 2 * 1000 / 4000 = 0.5.
    same = " ".join(["x"] * 2000)
    alternating = " ".join(["x", "y"] * 1000)
    started = time.perf_counter()
    assert similarity_match(same, alternating, 0.5) == Verdict(True, "similar")
    assert similarity_match(alternating, same, 0.51) == Verdict(
        False, "similar", "similarity 0.500 is below the threshold 0.51"
    )
    long = " ".join(["x"] * 50_000)  # past the cap: each side is cut at SIMILARITY_MAX_TOKENS
    assert similarity_match(long, long + " y", 1.0).passed
    assert time.perf_counter() - started < 20  # milliseconds in fact; only a regression to difflib comes near


def test_ast_match_fails_code_too_deep_to_compare_without_raising() -> None:
    deep = "def f(x):\n    return " + "+".join(["x"] * 2000) + "\n"  # parses, but ast.dump recurses too deep
    for answer, expected, side in ((deep, REFERENCE, "the answer "), (REFERENCE, deep, "the expected code ")):
        verdict = ast_match(answer, expected)
        assert not verdict.passed and verdict.verifier == "ast"
        assert verdict.reason and verdict.reason.startswith(side) and "RecursionError" in verdict.reason
    assert ast_match(deep, REFERENCE).reason == "the answer is too deeply nested to compare (RecursionError)"
    assert not grade(EvalItem("x", "p", "ast", expected=REFERENCE), deep).passed


CART = """\
function cartTotal(items, taxRate) {
  let total = 0;
  for (const item of items) {
    total += item.price * item.quantity; // "// in a string" would stay
  }
  return total * (1 + taxRate);
}
"""


def test_comments_do_not_count_when_code_is_compared_by_similarity() -> None:
    stripped = strip_comments(CART, "javascript")
    assert "in a string" not in stripped and "total += item.price * item.quantity;" in stripped
    assert strip_comments('const s = "// kept"; /* gone */', "javascript").split() == [
        "const",
        "s",
        "=",
        '"//',
        'kept";',
    ]
    assert strip_comments("# not parsed\n", "cobol") == "# not parsed\n"  # unknown language: as it is
    assert strip_comments("fn f() {} // gone\n", "rust").split() == ["fn", "f()", "{}"]
    noted = (
        "```javascript\n/**\n * Sum the prices of the items in the cart, applying each item's quantity.\n */\n"
        + CART.replace("let total = 0;", "let total = 0; // start from nothing, then add every item")
        + "```"
    )
    assert text_similarity(extract_code(noted), CART) < 0.9  # as tokens, the comments weigh
    assert similarity_match(noted, CART, 1.0, "javascript") == Verdict(True, "similar")
    item = EvalItem("x", "p", "similar", expected=CART, min_similarity=0.99, code_language="javascript")
    assert grade(item, noted).passed
    assert not grade(item, noted.replace("1 + taxRate", "1 - taxRate")).passed  # code still counts


# --- generated tests, comments, tags, questions on the data stage's fixture shop ------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Task]]:
    root = write_shop(tmp_path_factory.mktemp("shop") / "repo")
    return root, mine(root, root.parent / "cache.sqlite")


def by_id(tasks: list[Task]) -> dict[str, Task]:
    return {t.id: t for t in tasks}


RESTOCK_RIGHT = """\
```python
def restock_needed(count: int, minimum: int) -> bool:
    return count < minimum
```"""


def test_self_contained_python_functions_are_checked_by_generated_tests(shop: tuple[Path, list[Task]]) -> None:
    _, tasks = shop
    checks = {t.id: t.item.meta["check"] for t in tasks if t.kind in ("complete", "fix")}
    generated = {i for i, check in checks.items() if check == "generated-tests"}
    assert {i.split(":")[2] for i in generated} == {"restock_needed", "order_size", "total_value"}
    assert {i.split(":")[0] for i in generated} == {"complete", "fix"}
    # shopping_list calls other modules' functions, supplier_headers reads a module constant: no tests
    assert {checks[i] for i in checks if "shopping_list" in i or "supplier_headers" in i} == {"ast"}
    assert {checks[i] for i in checks if i.split(":")[1].endswith(".js")} == {"similar"}
    for task in (t for t in tasks if t.id in generated):
        item = task.item
        assert item.verifier == "python_tests" and item.entry_point == task.symbol and not item.humaneval_check
        assert 2 <= item.tests.count("assert ") <= mining.GENERATED_TESTS
        assert grade(item, task.reference).passed
        assert not grade(item, item.prompt).passed, task.id  # the bug, or the masked body


def test_generated_tests_accept_a_correct_function_written_another_way(shop: tuple[Path, list[Task]]) -> None:
    _, tasks = shop
    tasks_by_id = by_id(tasks)
    (fix_id,) = [i for i in tasks_by_id if i.startswith("fix:inventory/stock.py:restock_needed:")]
    for task in (tasks_by_id["complete:inventory/stock.py:restock_needed"], tasks_by_id[fix_id]):
        assert grade(task.item, RESTOCK_RIGHT) == Verdict(True, "python_tests")
        assert grade(task.item, task.reference).passed
        assert not grade(task.item, RESTOCK_RIGHT.replace("<", "<=")).passed
    fix = tasks_by_id[fix_id]
    verdict = grade(fix.item, fix.item.prompt)  # the buggy version the prompt shows
    assert not verdict.passed and verdict.verifier == "python_tests"
    total = tasks_by_id["complete:inventory/stock.py:total_value"]
    summed = "def total_value(prices, counts):\n    return sum(c * p for p, c in reversed(list(zip(prices, counts))))\n"
    assert grade(total.item, summed).passed  # floats summed in another order: compared within 1e-9
    assert not grade(total.item, summed.replace("c * p", "c + p")).passed


def test_generated_tests_are_the_same_for_a_seed(shop: tuple[Path, list[Task]], tmp_path: Path) -> None:
    root, tasks = shop
    again = mine(root, tmp_path / "cache.sqlite")
    assert [(t.id, t.item.tests, t.item.meta) for t in again] == [(t.id, t.item.tests, t.item.meta) for t in tasks]


def test_a_bug_the_generated_tests_cannot_see_keeps_the_ast_check(tmp_path: Path) -> None:
    files = {
        "keep.py": '''\
def keep(value: int, limit: int) -> int:
    """Give the value back, whichever side of the limit it is on."""
    if value < limit:
        return value
    return value
'''
    }
    root = write_repo(tmp_path / "repo", files)
    with RepoIndex(root, cache_path=tmp_path / "cache.sqlite") as index:
        tasks = by_id(mine_repository(index, ["complete", "fix"]))
    fix = tasks["fix:keep.py:keep:flip-compare"]  # `value >= limit` returns the same: no input tells them apart
    assert fix.item.verifier == "ast" and fix.item.meta["check"] == "ast"
    assert not grade(fix.item, fix.item.prompt).passed
    complete = tasks["complete:keep.py:keep"]
    assert complete.item.meta["check"] == "generated-tests"
    assert grade(complete.item, "def keep(value, limit):\n    return value\n").passed


def test_only_tasks_kept_after_the_cap_run_in_the_sandbox(shop: tuple[Path, list[Task]], tmp_path: Path) -> None:
    root, _ = shop
    checked: list[str] = []
    original = mining._generated_task

    def counting(task: Task, *args: Any) -> Task | None:
        checked.append(task.id)
        return original(task, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mining, "_generated_task", counting)
        with RepoIndex(root, cache_path=tmp_path / "cache.sqlite") as index:
            tasks = mine_repository(index, ["complete", "fix"], seed=1, per_kind=1)
    assert len(tasks) == 2 and set(checked) <= {t.id for t in tasks}


def test_nothing_with_an_autothink_tag_is_mined(tmp_path: Path) -> None:
    files = {
        "gate.py": '''\
def strip_judge(reply: str, keep: int) -> str:
    """Cut a reply at the first </judge> tag and keep that many characters of it."""
    if keep < 0:
        return ""
    return reply.split("</judge>")[0][:keep]


def shorten(reply: str, keep: int) -> str:
    """Keep the first characters of a reply, as many as asked for."""
    if keep <= 0:
        return ""
    return reply[:keep]
'''
    }
    root = write_repo(tmp_path / "repo", files)
    with RepoIndex(root, cache_path=tmp_path / "cache.sqlite") as index:
        tasks = mine_repository(index, REPO_KINDS)
    assert {t.symbol for t in tasks if t.kind != "question"} == {"shorten"}
    for task in tasks:
        texts = (task.item.prompt, task.item.expected, task.item.tests, task.reference, *task.item.accepted)
        assert not any(has_tag(text, KAT_TAGS) for text in texts), task.id


def test_javascript_answers_are_compared_without_their_comments(shop: tuple[Path, list[Task]]) -> None:
    _, tasks = shop
    tasks_by_id = by_id(tasks)
    complete = tasks_by_id["complete:web/cart.js:cartTotal"]
    doc = next(line for line in complete.item.prompt.splitlines() if line.startswith("// Sum the prices"))
    answer = f"```javascript\n{doc}\n{complete.item.expected.rstrip()}\n```"  # the doc line the prompt shows, repeated
    assert complete.item.code_language == "javascript" and grade(complete.item, answer).passed
    (fix_id,) = [i for i in tasks_by_id if i.startswith("fix:web/cart.js:cartTotal:")]
    fix = tasks_by_id[fix_id]
    noted = fix.item.expected.replace("{\n", "{ // fixed the bug here\n", 1)
    assert noted != fix.item.expected and grade(fix.item, f"```js\n{noted.rstrip()}\n```").passed
    assert not grade(fix.item, fix.item.prompt).passed


def test_question_prompts_do_not_depend_on_how_many_are_asked(shop: tuple[Path, list[Task]], tmp_path: Path) -> None:
    root, tasks = shop
    with RepoIndex(root, cache_path=tmp_path / "cache.sqlite") as index:
        index.refresh()
        few = {i.id: i.prompt for i in questions_from_index(index, 5, 3)}
        many = {i.id: i.prompt for i in questions_from_index(index, 5, 40)}
        capped = mine_repository(index, ["question"], per_kind=2)
    assert few and set(few) < set(many)
    assert all(many[i] == prompt for i, prompt in few.items())
    all_questions = {t.id: t.item.prompt for t in tasks if t.kind == "question"}
    assert capped and all(all_questions[t.id] == t.item.prompt for t in capped)


def test_questions_without_a_limit_are_capped(shop: tuple[Path, list[Task]], tmp_path: Path) -> None:
    root, _ = shop
    with pytest.MonkeyPatch.context() as patch, RepoIndex(root, cache_path=tmp_path / "cache.sqlite") as index:
        patch.setattr(mining, "QUESTION_CANDIDATES", 3)
        questions = mine_repository(index, ["question"])
    assert 1 <= len(questions) <= 3


def test_the_shops_secret_never_reaches_a_task(shop: tuple[Path, list[Task]]) -> None:
    _, tasks = shop
    for task in tasks:
        for text in (task.item.prompt, task.item.expected, task.item.tests, task.reference, *task.item.accepted):
            assert PLANTED_SECRET not in text, task.id
