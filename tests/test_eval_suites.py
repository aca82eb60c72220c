"""Eval suites and their grading, checked against ground truth the tests work out for themselves.

Why: a suite whose expected answers are wrong, or a verifier that fails right answers, makes every
score meaningless without anything crashing. So the arithmetic answers are recomputed here by an
independent parser of the problem sentences, repository questions are checked against a repository
written here (whose definitions and callers the test knows by construction), suite files are real
JSONL files, and code answers run in the real sandbox.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem, grade, program_for
from katpilot.eval.suites import BUNDLED, load_suite
from katpilot.eval.suites.arithmetic import DEFAULT_SIZE, LEVELS, arithmetic_ladder
from katpilot.eval.suites.files import (
    GSM8K_INSTRUCTION,
    HUMANEVAL_INSTRUCTION,
    MBPP_INSTRUCTION,
    SuiteFileError,
)
from katpilot.eval.verify import Verdict, extract_code, mentions_any, python_tests

# --- mentions_any --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "accepted", "passed"),
    [
        ("It is defined in src/app.py, near the top.", ["src/app.py"], True),
        ("It is defined in `src/app.py`.", ["src/app.py"], True),
        ('The file is "src/app.py".', ["src/app.py"], True),
        ("See src/app.py:12 for the definition.", ["src/app.py"], True),
        ("See app.py.", ["app.py"], True),
        ("See webapp.py.", ["app.py"], False),
        ("See my-app.py.", ["app.py"], False),
        ("See src/app.py.", ["app.py"], False),
        ("See app.pyc instead.", ["app.py"], False),
        ("See app.py.bak instead.", ["app.py"], False),
        ("It calls `load`.", ["load"], True),
        ("It calls obj.load(path) first.", ["load"], True),
        ("It ends with load.", ["load"], True),
        ("It calls load_all() first.", ["load"], False),
        ("It calls reload() first.", ["load"], False),
        ("It lives in load.py.", ["load"], False),
        ("It calls Load().", ["load"], False),  # case is kept: code names are exact
        ("`Store.save` calls it.", ["Store.save", "save"], True),
        ("Only `restore` does.", ["Store.save", "save", "restore"], True),
    ],
)
def test_mentions_any_finds_a_whole_name_inside_a_sentence(answer: str, accepted: list[str], passed: bool) -> None:
    verdict = mentions_any(answer, accepted)
    assert verdict.passed is passed, verdict
    assert verdict.verifier == "mentions"
    assert (verdict.reason is None) is passed


def test_mentions_any_without_an_accepted_answer_fails_and_says_so() -> None:
    for accepted in ([], [""], ("", "")):
        assert mentions_any("src/app.py", accepted) == Verdict(False, "mentions", "no accepted answer was given")


def test_mentions_any_reason_names_the_accepted_answers() -> None:
    verdict = mentions_any("It is main.py.", ["src/app.py", "app"])
    assert verdict == Verdict(False, "mentions", "the answer names none of 'src/app.py', 'app'")
    many = mentions_any("nothing", ["alpha", "beta", "gamma", "delta"])
    assert many.reason == "the answer names none of 'alpha', 'beta', 'gamma' …"


def test_mentions_any_accepts_a_relative_path_written_with_a_leading_dot_slash() -> None:
    assert mentions_any("It is defined in ./store/models.py.", ["store/models.py"]).passed


# --- grade / program_for: HumanEval style ---------------------------------------------------------

BELOW_ZERO_PRELUDE = '''from typing import List


def below_zero(operations: List[int]) -> bool:
    """ Given deposits and withdrawals on an account that starts at zero, say whether the balance
    ever falls below zero.
    >>> below_zero([1, 2, 3])
    False
    >>> below_zero([1, 2, -4, 5])
    True
    """
'''
BELOW_ZERO_TESTS = """

METADATA = {'author': 'jt', 'dataset': 'test'}


def check(candidate):
    assert candidate([]) == False
    assert candidate([1, 2, -3, 1, 2, -3]) == False
    assert candidate([1, 2, -4, 5, 6]) == True
    assert candidate([1, -1, 2, -2, 5, -5, 4, -4]) == False
    assert candidate([1, -1, 2, -2, 5, -5, 4, -5]) == True
"""
# A whole function that uses `List` without importing it: the prelude's import must be kept.
FULL_FUNCTION = """Here is the function:
```python
def below_zero(operations: List[int]) -> bool:
    balance = 0
    for op in operations:
        balance += op
        if balance < 0:
            return True
    return False
```
It keeps a running balance.
"""
WRONG_FUNCTION = "```python\ndef below_zero(operations: List[int]) -> bool:\n    return False\n```\n"
# The body as the session hands it over: leading whitespace stripped, so the first line is flush left.
STRIPPED_BODY = (
    "balance = 0\n    for op in operations:\n        balance += op\n        if balance < 0:\n"
    "            return True\n    return False"
)
INDENTED_BODY = "    " + STRIPPED_BODY
ONE_LINE_BODY = "return any(sum(operations[: i + 1]) < 0 for i in range(len(operations)))"
FLAT_BODY = "sums = [sum(operations[: i + 1]) for i in range(len(operations))]\nreturn any(s < 0 for s in sums)"


def humaneval_item(prelude: str = BELOW_ZERO_PRELUDE) -> EvalItem:
    return EvalItem(
        id="HumanEval/3",
        prompt=f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prelude}```",
        verifier="python_tests",
        tests=BELOW_ZERO_TESTS,
        entry_point="below_zero",
        humaneval_check=True,
        prelude=prelude,
    )


def test_a_whole_function_in_a_fence_passes_and_keeps_the_preludes_import() -> None:
    item = humaneval_item()
    assert grade(item, FULL_FUNCTION) == Verdict(True, "python_tests")
    program = program_for(item, FULL_FUNCTION)
    assert program.startswith("from typing import List\n")
    assert program.endswith(extract_code(FULL_FUNCTION, "below_zero"))
    assert "It keeps a running balance" not in program  # the prose around the fence is dropped
    # Without the prelude the same code fails: the import really comes from the prelude.
    alone = python_tests(FULL_FUNCTION, BELOW_ZERO_TESTS, entry_point="below_zero")
    assert not alone.passed and (alone.reason or "").startswith("NameError: name 'List' is not defined")


@pytest.mark.parametrize("body", [STRIPPED_BODY, INDENTED_BODY, ONE_LINE_BODY, FLAT_BODY])
def test_an_answer_that_is_only_the_body_continues_the_prelude(body: str) -> None:
    item = humaneval_item()
    assert grade(item, body) == Verdict(True, "python_tests")
    program = program_for(item, body)
    assert program.startswith(BELOW_ZERO_PRELUDE.rstrip("\n") + "\n    ")
    assert program.count("def below_zero") == 1


def test_a_stripped_body_gets_the_indentation_of_its_later_lines() -> None:
    program = program_for(humaneval_item(), STRIPPED_BODY)
    assert program == BELOW_ZERO_PRELUDE + INDENTED_BODY + "\n"


def test_a_wrong_function_or_an_empty_answer_fails_with_the_assertion() -> None:
    item = humaneval_item()
    assert grade(item, WRONG_FUNCTION) == Verdict(False, "python_tests", "AssertionError")
    assert grade(item, "") == Verdict(False, "python_tests", "AssertionError")  # the docstring body returns None


def test_a_body_with_a_syntax_error_fails_with_the_error() -> None:
    verdict = grade(humaneval_item(), "return any(")
    assert not verdict.passed
    assert verdict.reason is not None and "SyntaxError" in verdict.reason


def test_a_stripped_body_with_a_continuation_line_passes() -> None:
    body = "return any(sum(operations[: i + 1]) < 0\n           for i in range(len(operations)))"
    assert grade(humaneval_item(), body) == Verdict(True, "python_tests")


# --- grade: MBPP / bundled style -----------------------------------------------------------------

SQUARE = EvalItem(
    id="square",
    prompt="Write square(x).",
    verifier="python_tests",
    tests="assert square(3) == 9\nassert square(-2) == 4",
    entry_point="square",
)


def test_an_assert_style_item_picks_the_block_that_defines_the_entry_point() -> None:
    answer = (
        "Usage:\n```python\nprint(square(3))\n```\nThe function:\n```python\ndef square(x):\n    return x * x\n```\n"
    )
    assert grade(SQUARE, answer) == Verdict(True, "python_tests")
    assert grade(SQUARE, "def square(x):\n    return x * x") == Verdict(True, "python_tests")


def test_an_assert_style_item_fails_a_wrong_or_missing_function() -> None:
    assert grade(SQUARE, "```python\ndef square(x):\n    return x + x\n```") == Verdict(
        False, "python_tests", "AssertionError"
    )
    assert grade(SQUARE, "```python\ndef cube(x):\n    return x ** 3\n```") == Verdict(
        False, "python_tests", "NameError: name 'square' is not defined"
    )


def test_a_bundled_code_item_grades_through_the_same_path() -> None:
    item = next(i for i in load_suite("code").items if i.id == "code-001-add-numbers")
    assert not item.humaneval_check and item.entry_point == "add_numbers"
    assert grade(item, "```python\ndef add_numbers(a: int, b: int) -> int:\n    return a + b\n```").passed
    assert not grade(item, "```python\ndef add_numbers(a: int, b: int) -> int:\n    return a - b\n```").passed


# --- arithmetic ladder ---------------------------------------------------------------------------

_INSTRUCTION = "Answer with the final number alone on the last line."
_OPENING = re.compile(r"(?P<person>[A-Z][a-z]+) has (?P<n>\d+) (?P<things>[a-z]+)\.")
_QUESTION = re.compile(r"How many (?P<things>[a-z]+) does (?P<person>[A-Z][a-z]+) have now\?")
_FACTORS = {"doubles": 2, "triples": 3, "quadruples": 4}


def _add(value: int, n: int) -> int:
    return value + n


def _subtract(value: int, n: int) -> int:
    assert n <= value, "a problem must never take away more than there is"
    return value - n


def _multiply(value: int, word: str) -> int:
    return value * _FACTORS[word]


def _divide(value: int, d: int) -> int:
    assert d in (2, 3, 4, 5) and value % d == 0, "a split must be exact"
    return value // d


# sentence pattern, operation, which group is the operand (named "things" groups must match the items)
_STEPS: list[tuple[re.Pattern[str], Callable[[int, Any], int], bool]] = [
    (re.compile(r"Then they get (?P<n>\d+) more\."), _add, True),
    (re.compile(r"A friend gives them (?P<n>\d+) (?P<things>[a-z]+)\."), _add, True),
    (re.compile(r"Then they give away (?P<n>\d+)\."), _subtract, True),
    (re.compile(r"They lose (?P<n>\d+) (?P<things>[a-z]+)\."), _subtract, True),
    (re.compile(r"Then their collection (?P<n>doubles|triples|quadruples)\."), _multiply, False),
    (
        re.compile(r"They split the (?P<things>[a-z]+) equally into (?P<n>\d+) boxes and keep only one box\."),
        _divide,
        True,
    ),
]


def solve(prompt: str) -> tuple[int, int]:
    """(the answer, the number of operations) of an arithmetic problem, read from its sentences."""
    body, instruction = prompt.split("\n")
    assert instruction == _INSTRUCTION
    first, *steps, last = re.split(r"(?<=[.?]) ", body)
    opening, question = _OPENING.fullmatch(first), _QUESTION.fullmatch(last)
    assert opening and question, prompt
    assert (question["person"], question["things"]) == (opening["person"], opening["things"])
    value = int(opening["n"])
    for sentence in steps:
        for pattern, operation, numeric in _STEPS:
            m = pattern.fullmatch(sentence)
            if m:
                assert m.groupdict().get("things", opening["things"]) == opening["things"], sentence
                value = operation(value, int(m["n"]) if numeric else m["n"])
                break
        else:
            raise AssertionError(f"unknown sentence {sentence!r} in {prompt!r}")
    return value, len(steps)


def test_the_ladder_is_the_same_for_a_seed_and_differs_between_seeds() -> None:
    first = arithmetic_ladder(7)
    assert first == arithmetic_ladder(7)
    assert load_suite("arithmetic", seed=7).items == first
    other = arithmetic_ladder(8)
    assert [i.id for i in other] == [i.id for i in first]
    assert sum(a.prompt != b.prompt for a, b in zip(first, other, strict=True)) >= DEFAULT_SIZE - 2
    assert len(first) == DEFAULT_SIZE and len({i.id for i in first}) == DEFAULT_SIZE


def test_item_i_does_not_depend_on_the_size() -> None:
    full = arithmetic_ladder(3, 25)
    for size in (0, 1, 6, 13):
        assert arithmetic_ladder(3, size) == full[:size]
    assert arithmetic_ladder(3)[:25] == full


def test_levels_cycle_from_one_to_six_and_answers_are_whole_numbers() -> None:
    items = arithmetic_ladder(0)
    assert [i.level for i in items] == [1 + n % LEVELS for n in range(DEFAULT_SIZE)]
    assert LEVELS == 6
    for item in items:
        assert item.verifier == "numeric"
        assert re.fullmatch(r"0|[1-9]\d*", item.expected), item.expected


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_every_expected_answer_matches_the_problem_as_written(seed: int) -> None:
    for item in arithmetic_ladder(seed):
        answer, steps = solve(item.prompt)
        assert str(answer) == item.expected, item.prompt
        assert steps == item.level, item.prompt
        assert item.id == f"arith-{int(item.id[6:9]):03d}-L{item.level}"
        assert grade(item, f"Step by step...\n{answer}").passed
        assert not grade(item, f"{answer + 1}").passed


# --- code suite ----------------------------------------------------------------------------------


def test_the_code_suite_interleaves_levels_and_asks_for_a_python_block() -> None:
    suite = load_suite("code")
    items = suite.items
    assert suite.name == "code"
    assert len(items) >= 40
    assert len({i.id for i in items}) == len(items)
    assert {i.verifier for i in items} == {"python_tests"}
    assert sorted(i.level for i in items[:5]) == [1, 2, 3, 4, 5]
    assert {i.level for i in items} == {1, 2, 3, 4, 5}
    for item in items:
        assert item.prompt.endswith("\n\nReply with the complete code in one ```python block."), item.id
        assert item.entry_point and item.entry_point in item.prompt, item.id
        assert item.tests.strip() and not item.humaneval_check


# --- suite files ---------------------------------------------------------------------------------


def write_jsonl(path: Path, records: Sequence[object | str]) -> Path:
    """One line per record: a dict or list is dumped as JSON, a string is written as it is."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


HUMANEVAL_RECORD = {
    "task_id": "HumanEval/3",
    "prompt": BELOW_ZERO_PRELUDE,
    "canonical_solution": "    pass\n",
    "test": BELOW_ZERO_TESTS,
    "entry_point": "below_zero",
}
TRUNCATE_PRELUDE = 'def truncate_number(number: float) -> float:\n    """ The decimal part of a number. """\n'
TRUNCATE_RECORD = {
    "task_id": "HumanEval/2",
    "prompt": TRUNCATE_PRELUDE,
    "test": "def check(candidate):\n    assert candidate(3.5) == 0.5\n",
    "entry_point": "truncate_number",
}


def test_a_humaneval_file_loads_into_items_that_grade(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "he.jsonl", [HUMANEVAL_RECORD, "", TRUNCATE_RECORD])
    suite = load_suite(str(path))
    assert suite.name == "humaneval:he.jsonl"
    assert str(path.resolve()) in suite.description
    first, second = suite.items
    assert first.id == "HumanEval/3" and second.id == "HumanEval/2"
    assert first.verifier == "python_tests" and first.humaneval_check
    assert first.entry_point == "below_zero" and first.tests == BELOW_ZERO_TESTS
    assert first.prelude == BELOW_ZERO_PRELUDE
    assert first.prompt == f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{BELOW_ZERO_PRELUDE.rstrip()}\n```"
    assert grade(first, FULL_FUNCTION).passed
    assert grade(second, "return number % 1.0").passed
    assert grade(second, "return number").reason == "AssertionError"


MBPP_RECORDS: list[dict[str, Any]] = [
    {
        "task_id": 11,
        "text": "Write a function to find the area of a circle.",
        "code": "",
        "test_list": [
            "assert math.isclose(circle_area(1), 3.14159, rel_tol=1e-3)",
            "assert math.isclose(circle_area(2), 12.566, rel_tol=1e-3)",
        ],
        "test_setup_code": "",
        "test_imports": ["import math"],
    },
    {
        "task_id": 12,
        "text": "Write a function to tell whether a number is odd.",
        "test_list": ["assert not is_odd_number(4)", "assert is_odd_number(LIMIT + 1)"],
        "test_setup_code": "LIMIT = 10",
    },
    {
        "text": "Write a function to find the items two lists share.",
        "test_list": ["assert set(common_items([1, 2], [2, 3])) == {2}"],
    },
    {
        "task_id": 14,
        "text": "Write a function to add two numbers.",
        "test_list": ["assert (add_two(1, 2) == 3)"],
    },
]


def test_an_mbpp_file_loads_with_its_setup_and_the_entry_point_of_the_first_assert(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mbpp.jsonl", MBPP_RECORDS)
    suite = load_suite(str(path))
    assert suite.name == "mbpp:mbpp.jsonl"
    area, odd, common, add = suite.items
    assert [i.id for i in suite.items] == ["11", "12", "line-3", "14"]
    assert [i.entry_point for i in suite.items] == ["circle_area", "is_odd_number", "common_items", "add_two"]
    assert {i.verifier for i in suite.items} == {"python_tests"}
    assert not any(i.humaneval_check or i.prelude for i in suite.items)
    assert area.tests == "import math\n" + "\n".join(MBPP_RECORDS[0]["test_list"])
    assert odd.tests == "LIMIT = 10\n" + "\n".join(MBPP_RECORDS[1]["test_list"])
    assert area.prompt == f"{MBPP_RECORDS[0]['text']}\n{MBPP_INSTRUCTION}\n" + "\n".join(MBPP_RECORDS[0]["test_list"])
    # The tests need the file's imports (math) and setup code (LIMIT): both run before them.
    assert grade(area, "```python\ndef circle_area(r):\n    return 3.14159 * r * r\n```").passed
    assert grade(odd, "def is_odd_number(n):\n    return n % 2 == 1").passed
    assert grade(odd, "def is_odd_number(n):\n    return True").reason == "AssertionError"
    assert grade(common, "def common_items(a, b):\n    return [x for x in a if x in b]").passed
    assert grade(add, "def add_two(a, b):\n    return a + b").passed


def test_the_mbpp_entry_point_skips_builtin_wrappers(tmp_path: Path) -> None:
    record = {"task_id": 1, "text": "Unique items.", "test_list": ["assert sorted(unique_items([3, 1, 3])) == [1, 3]"]}
    (item,) = load_suite(str(write_jsonl(tmp_path / "mbpp.jsonl", [record]))).items
    answer = (
        "Example:\n```python\nprint(unique_items([3, 1, 3]))\n```\n"
        "Code:\n```python\ndef unique_items(xs):\n    return list(set(xs))\n```\n"
    )
    assert item.entry_point == "unique_items"
    assert grade(item, answer).passed


GSM8K_ANSWER = "She sold 1,000 in May and 234 in June.\n1,000 + 234 = 1,234\n#### 1,234"


def test_a_gsm8k_file_grades_the_number_after_the_marker(tmp_path: Path) -> None:
    records = [
        {"question": "How many clips did Natalia sell?", "answer": GSM8K_ANSWER},
        {"id": "q-7", "question": "How many?", "answer": "#### 5"},
        {"task_id": "t-9", "question": "And now?", "answer": "#### 0"},
    ]
    path = write_jsonl(tmp_path / "gsm8k.jsonl", records)
    suite = load_suite(str(path))
    assert suite.name == "gsm8k:gsm8k.jsonl"
    clips, five, zero = suite.items
    assert [i.id for i in suite.items] == ["line-1", "q-7", "t-9"]
    assert clips.verifier == "numeric" and clips.expected == GSM8K_ANSWER
    assert clips.prompt == f"How many clips did Natalia sell?\n{GSM8K_INSTRUCTION}"
    for right in ("1234", "The answer is 1,234.", "#### 1,234", "so \\boxed{1234}"):
        assert grade(clips, right) == Verdict(True, "numeric"), right
    assert grade(clips, "1,000 + 234 = 1233") == Verdict(False, "numeric", "expected 1234, got 1233")
    assert grade(clips, "234") == Verdict(False, "numeric", "expected 1234, got 234")
    assert grade(five, "5").passed and grade(zero, "0").passed
    # Any existing file is a suite file, whatever its suffix.
    renamed = path.rename(tmp_path / "questions.txt")
    assert load_suite(str(renamed)).items == suite.items


def _error(spec: str) -> KatpilotError:
    with pytest.raises(KatpilotError) as caught:
        load_suite(spec)
    exc = caught.value
    assert exc.fix, "every error carries its fix"
    assert "\n" not in exc.one_line()
    assert exc.one_line() == " ".join(f"{exc.message} (fix: {exc.fix})".split())
    assert str(exc) == exc.message
    return exc


GOOD_GSM = {"id": "a", "question": "How many?", "answer": "#### 3"}


@pytest.mark.parametrize(
    ("lines", "in_message", "in_fix"),
    [
        ([], ["has no records"], ["one JSON object per line"]),
        (["", "   "], ["has no records"], ["one JSON object per line"]),
        ([GOOD_GSM, "{not json"], ["line 2 is not JSON ("], ["JSONL"]),
        (["", "[1, 2, 3]"], ["line 2 is not a JSON object"], ["one JSON object per line"]),
        ([GOOD_GSM, '"just a string"'], ["line 2 is not a JSON object"], ["JSONL"]),
        (
            [{"question": "How many?", "id": 3}],
            ["line 1: not a known suite shape (closest: gsm8k, missing answer)"],
            ["humaneval needs task_id, prompt, test, entry_point", "mbpp needs text, test_list", "gsm8k needs answer"],
        ),
        (
            [{"prompt": "def f():\n", "test": "", "entry_point": "f"}],
            ["line 1: not a known suite shape (closest: humaneval, missing task_id)"],
            ["HumanEval, MBPP or GSM8K"],
        ),
        (
            [{"text": "Write f.", "code": "def f(): pass"}],
            ["(closest: mbpp, missing test_list)"],
            ["mbpp needs test_list"],
        ),
        (
            [HUMANEVAL_RECORD, "", {k: v for k, v in TRUNCATE_RECORD.items() if k != "test"}],
            ["line 3: a humaneval record without test"],
            ["every record of a humaneval file needs task_id, prompt, test, entry_point"],
        ),
        (
            [GOOD_GSM, {"id": "b", "question": "And?"}],
            ["line 2: a gsm8k record without answer"],
            ["needs question, answer"],
        ),
        ([GOOD_GSM, {**GOOD_GSM, "question": "Again?"}], ["line 2: the id 'a' is used twice"], ["its own id"]),
        ([HUMANEVAL_RECORD, HUMANEVAL_RECORD], ["line 2: the id 'HumanEval/3' is used twice"], ["its own id"]),
        ([{**HUMANEVAL_RECORD, "prompt": 5}], ["line 1: prompt must be a string, not int"], ["fix the record"]),
        ([{"question": ["q"], "answer": "#### 1"}], ["line 1: question must be a string, not list"], ["fix"]),
        (
            [{"text": "Write f.", "test_list": []}],
            ["line 1: test_list must be a non-empty list of strings"],
            ["fix the record"],
        ),
    ],
)
def test_a_bad_suite_file_is_one_clear_error(
    tmp_path: Path, lines: list[object], in_message: list[str], in_fix: list[str]
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    exc = _error(str(path))
    assert isinstance(exc, SuiteFileError)
    for text in in_message:
        assert text in exc.message, exc.one_line()
    for text in in_fix:
        assert text in exc.fix, exc.one_line()


def test_a_missing_or_unreadable_suite_file_is_an_error(tmp_path: Path) -> None:
    missing = _error(str(tmp_path / "nowhere.jsonl"))
    assert isinstance(missing, SuiteFileError)
    assert missing.message == f"suite file {tmp_path / 'nowhere.jsonl'} does not exist"
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    unreadable = _error(str(binary))
    assert isinstance(unreadable, SuiteFileError) and unreadable.message.startswith(f"cannot read suite file {binary}")
    assert "UTF-8" in unreadable.fix


def test_an_unknown_suite_name_lists_the_bundled_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exc = _error("nonsense")
    assert not isinstance(exc, SuiteFileError)
    assert exc.message == "unknown suite 'nonsense'"
    assert BUNDLED == ("arithmetic", "code", "repo")
    assert "arithmetic, code, repo" in exc.fix and "HumanEval, MBPP or GSM8K" in exc.fix


# --- repository questions ------------------------------------------------------------------------

REPO_FILES = {
    "store/models.py": '''"""Stock records."""


class InventoryLedger:
    """Counts of things in stock."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def record_arrival(self, item: str, amount: int) -> None:
        self.counts[item] = self.counts.get(item, 0) + amount

    def remaining_stock(self, item: str) -> int:
        return self.counts.get(item, 0)


def parse_quantity(text: str) -> int:
    return int(text.strip())
''',
    "store/service.py": """from store.models import InventoryLedger, parse_quantity


def receive_shipment(ledger: InventoryLedger, lines: list[str]) -> None:
    for line in lines:
        name, qty = line.split(",")
        ledger.record_arrival(name, parse_quantity(qty))


def stock_report(ledger: InventoryLedger, names: list[str]) -> str:
    return ", ".join(name + "=" + str(ledger.remaining_stock(name)) for name in names)
""",
    "store/desk.py": '''from store.models import parse_quantity


class ShipmentDesk:
    """Takes crates in at the door."""

    def accept_crate(self, label: str) -> int:
        return parse_quantity(label) * 2
''',
    "store/cli.py": """from store.desk import ShipmentDesk
from store.models import InventoryLedger
from store.service import receive_shipment, stock_report


def main_entry(argv: list[str]) -> str:
    ledger = InventoryLedger()
    receive_shipment(ledger, argv)
    ShipmentDesk().accept_crate("3")
    return stock_report(ledger, sorted({arg.split(",")[0] for arg in argv}))


def unused_helper_thing() -> None:
    pass
""",
}
# Ground truth, read off REPO_FILES by hand: where each askable name is defined, and what calls it.
DEFINED_IN = {
    "InventoryLedger": "store/models.py",
    "InventoryLedger.record_arrival": "store/models.py",
    "InventoryLedger.remaining_stock": "store/models.py",
    "parse_quantity": "store/models.py",
    "receive_shipment": "store/service.py",
    "stock_report": "store/service.py",
    "ShipmentDesk": "store/desk.py",
    "ShipmentDesk.accept_crate": "store/desk.py",
    "main_entry": "store/cli.py",
    "unused_helper_thing": "store/cli.py",
}
CALLED_BY = {
    "InventoryLedger.record_arrival": {"receive_shipment"},
    "InventoryLedger.remaining_stock": {"stock_report"},
    "parse_quantity": {"receive_shipment", "ShipmentDesk.accept_crate", "accept_crate"},
    "receive_shipment": {"main_entry"},
    "stock_report": {"main_entry"},
    "ShipmentDesk.accept_crate": {"main_entry"},
}


def write_repo(root: Path) -> Path:
    for name, text in REPO_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def definition_header(qualified: str) -> tuple[str, str]:
    """The `path:line` header and the first line of a definition in REPO_FILES, found by reading it."""
    path, name = DEFINED_IN[qualified], qualified.rsplit(".", 1)[-1]
    for row, line in enumerate(REPO_FILES[path].splitlines(), 1):
        if re.match(rf"\s*(def|class) {name}\b", line):
            return f"{path}:{row}", line
    raise AssertionError(f"{qualified} is not in {path}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "shop")


def test_repo_questions_alternate_and_match_the_repository(repo: Path) -> None:
    suite = load_suite("repo", repo=repo, seed=0)
    assert suite.name == "repo:shop"
    kinds = [i.meta["kind"] for i in suite.items]
    where = [i for i in suite.items if i.meta["kind"] == "where-defined"]
    calls = [i for i in suite.items if i.meta["kind"] == "who-calls"]
    assert kinds == ["where-defined", "who-calls"] * len(calls) + ["where-defined"] * (len(where) - len(calls))
    assert {i.meta["name"] for i in where} == set(DEFINED_IN)  # __init__ and repeated names are not asked
    assert {i.meta["name"] for i in calls} == set(CALLED_BY)  # nothing calls main_entry or unused_helper_thing
    assert len({i.id for i in suite.items}) == len(suite.items)
    for item in suite.items:
        assert item.verifier == "mentions"
        assert item.prompt.startswith("Code from the repository:\n\n")


def test_a_where_defined_question_shows_the_definition_and_accepts_its_file(repo: Path) -> None:
    for item in load_suite("repo", repo=repo, seed=0).items:
        if item.meta["kind"] != "where-defined":
            continue
        qualified = item.meta["name"]
        assert item.accepted == (DEFINED_IN[qualified],)
        header, first_line = definition_header(qualified)
        assert f"{header}\n```\n{first_line}\n" in item.prompt, item.prompt
        assert f"`{qualified.rsplit('.', 1)[-1]}`? Answer with its path." in item.prompt
        assert grade(item, f"It is defined in `{DEFINED_IN[qualified]}`.") == Verdict(True, "mentions")
        wrong = next(p for p in REPO_FILES if p != DEFINED_IN[qualified])
        verdict = grade(item, f"It is defined in `{wrong}`.")
        assert not verdict.passed and DEFINED_IN[qualified] in (verdict.reason or "")


def test_a_who_calls_question_shows_a_caller_and_accepts_only_real_callers(repo: Path) -> None:
    for item in load_suite("repo", repo=repo, seed=0).items:
        if item.meta["kind"] != "who-calls":
            continue
        qualified = item.meta["name"]
        name = qualified.rsplit(".", 1)[-1]
        assert set(item.accepted) == CALLED_BY[qualified]
        assert item.prompt.endswith(f"name a function or method that calls `{name}`.")
        assert definition_header(qualified)[1] in item.prompt
        callers = [c for c in CALLED_BY[qualified] if c in DEFINED_IN]  # qualified names, not bare method names
        assert any(definition_header(c)[1] in item.prompt for c in callers), item.prompt
        for caller in CALLED_BY[qualified]:
            assert grade(item, f"`{caller}` calls it.").passed
        assert not grade(item, f"`{name}` calls itself.").passed
        assert not grade(item, "`unused_helper_thing` does.").passed


def test_repo_questions_are_the_same_for_a_seed(repo: Path) -> None:
    first = load_suite("repo", repo=repo, seed=0).items
    assert load_suite("repo", repo=repo, seed=0).items == first
    other = load_suite("repo", repo=repo, seed=1).items
    assert [i.id for i in other] != [i.id for i in first]
    assert sorted(i.id for i in other) == sorted(i.id for i in first)


def test_a_repository_without_source_files_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "README.md").write_text("# Notes\n\nNothing to run here.\n")
    (empty / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(KatpilotError) as caught:
        load_suite("repo", repo=empty, seed=0)
    assert caught.value.message == f"the index found no definitions to ask about in {empty.resolve()}"
    assert "(fix: give --repo a repository with source files" in caught.value.one_line()
    with pytest.raises(KatpilotError) as missing:
        load_suite("repo", repo=tmp_path / "nowhere", seed=0)
    assert "not a directory" in missing.value.message and missing.value.fix
