"""Verifiers: numbers out of free text, exact match, and code judged by its tests in the sandbox."""

from __future__ import annotations

from fractions import Fraction

import pytest

from katpilot.eval.verify import Verdict, exact_match, extract_code, extract_number, numeric_match, python_tests


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 18.", 18),
        ("She has 3 apples and buys 4 more, so 7 apples", 7),
        ("so 1,234,567 apples", 1234567),
        ("It costs $18.50 in total", Fraction(37, 2)),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", 72),
        ("#### 1,000\n", 1000),
        ("first 5, then #### -3", -3),
        ("thus \\boxed{\\frac{3}{4}} and not 9", Fraction(3, 4)),
        ("\\boxed{-12} is final", -12),
        ("\\boxed{\\$1,200}", 1200),
        ("\\boxed{50\\%}", 50),
        ("\\boxed{x = 4}", 4),
        ("-3/4", Fraction(-3, 4)),
        ("5-3 = 2", 2),
        ("x = -7", -7),
        ("1e3", 1000),
        ("no numbers here", None),
    ],
)
def test_extract_number_finds_the_final_answer(text: str, number: int | Fraction | None) -> None:
    assert extract_number(text) == number


def test_numeric_match_compares_with_a_tolerance_and_says_why_not() -> None:
    assert numeric_match("I think it is 42", 42) == Verdict(True, "numeric")
    assert numeric_match("#### 0.3333333", "1/3").passed
    assert not numeric_match("#### 0.33", "1/3").passed
    assert numeric_match("12.0", "#### 12").passed
    assert numeric_match("41", "#### 42") == Verdict(False, "numeric", "expected 42, got 41")
    assert numeric_match("no idea", 42) == Verdict(False, "numeric", "no number in the answer")
    assert numeric_match("42", "n/a").reason == "the expected answer 'n/a' has no number"


def test_exact_match_ignores_case_whitespace_and_a_final_full_stop() -> None:
    assert exact_match("  The   Eiffel\nTower. ", "the eiffel tower") == Verdict(True, "exact")
    assert exact_match("Lyon", "Paris") == Verdict(False, "exact", "expected 'paris', got 'lyon'")
    assert not exact_match("Paris, France", "Paris").passed


def test_extract_code_takes_the_fenced_block_that_defines_the_entry_point() -> None:
    answer = "Try:\n```python\nprint(add(1, 2))\n```\nwhere\n```py\ndef add(a, b):\n    return a + b\n```\n"
    assert extract_code(answer, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_code(answer) == "print(add(1, 2))\n"
    assert extract_code("def add(a, b): return a + b") == "def add(a, b): return a + b"


HUMANEVAL_TESTS = """
def check(candidate):
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True
"""
GOOD = """Here is my solution:
```python
def has_close_elements(numbers, threshold):
    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])
```
"""
WRONG = "def has_close_elements(numbers, threshold):\n    return True\n"


def test_a_humaneval_style_problem_passes_with_a_right_answer_and_fails_with_a_wrong_one() -> None:
    assert python_tests(GOOD, HUMANEVAL_TESTS, entry_point="has_close_elements") == Verdict(True, "python_tests")
    verdict = python_tests(WRONG, HUMANEVAL_TESTS, entry_point="has_close_elements")
    assert not verdict.passed and verdict.reason == "AssertionError"


def test_mbpp_style_assert_lines() -> None:
    tests = ["assert square(3) == 9", "assert square(-2) == 4"]
    assert python_tests("def square(x):\n    return x * x", tests).passed
    verdict = python_tests("def square(x):\n    return x + x", tests)
    assert not verdict.passed and verdict.reason == "AssertionError"
    verdict = python_tests("def cube(x):\n    return x ** 3", tests)
    assert verdict.reason == "NameError: name 'square' is not defined"


@pytest.mark.parametrize("escape", ["import sys; sys.exit(0)", "import os; os._exit(0)"])
def test_a_candidate_that_exits_before_the_tests_run_fails(escape: str) -> None:
    verdict = python_tests(f"def square(x):\n    return 0\n{escape}", ["assert square(3) == 9"])
    assert verdict == Verdict(False, "python_tests", "the program exited before the tests finished")


def test_a_hostile_candidate_fails_with_the_sandboxs_reason_and_the_next_item_still_runs() -> None:
    looping = python_tests("def square(x):\n    while True:\n        pass", ["assert square(3) == 9"], timeout_s=0.5)
    assert looping == Verdict(False, "python_tests", "timed out after 0.5 s")
    exfiltrating = python_tests(
        "import urllib.request\ndef square(x):\n    urllib.request.urlopen('http://127.0.0.1:9/')\n    return x * x",
        ["assert square(3) == 9"],
    )
    assert exfiltrating == Verdict(False, "python_tests", "network refused")
    greedy = python_tests("def square(x):\n    return len(bytearray(2**40))", ["assert square(3) == 9"], memory_mb=128)
    assert greedy == Verdict(False, "python_tests", "memory limit")
    assert python_tests("def square(x):\n    return x * x", ["assert square(3) == 9"]).passed
