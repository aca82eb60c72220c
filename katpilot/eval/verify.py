"""Verifiers: an answer and what was expected in, a `Verdict` out. Shared by eval and the trainer.

- `exact_match`: the text, compared after normalising case and whitespace.
- `numeric_match`: the final number of a free-text answer (GSM8K style), compared with a tolerance.
- `mentions_any`: free text that names one of the accepted answers (a path, a function name).
- `python_tests`: candidate code and its unit tests run together in the sandbox.
- `ast_match`: Python code that must be the expected code, compared by syntax tree (formatting,
  comments and docstrings do not count), for code whose behaviour has no tests to run.
- `similarity_match`: text close enough to the expected text (word and punctuation tokens, compared
  by their longest common subsequence), for code in languages we cannot run (comments dropped on
  both sides) and for prose such as docstrings.

Verifiers never raise for anything in the answer: a malformed, hostile or runaway answer is a
failed verdict with its reason, so a run goes on.
"""

from __future__ import annotations

import ast
import math
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from katpilot.eval.sandbox import SandboxResult, run_python

__all__ = [
    "Verdict",
    "ast_match",
    "exact_match",
    "extract_code",
    "extract_number",
    "mentions_any",
    "normalise_text",
    "numeric_match",
    "python_tests",
    "similarity_match",
    "strip_comments",
    "text_similarity",
]


@dataclass(frozen=True)
class Verdict:
    """Whether an answer passed, which verifier said so, and why not (None when it passed)."""

    passed: bool
    verifier: str  # "exact", "numeric", "mentions", "python_tests", "ast" or "similar"
    reason: str | None = None


# --- exact ---------------------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """Casefolded, whitespace runs collapsed to one space, ends stripped, one trailing full stop dropped."""
    text = " ".join(text.split()).casefold()
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(answer: str, expected: str) -> Verdict:
    """Pass when the answer equals the expected text after `normalise_text` on both."""
    got, want = normalise_text(answer), normalise_text(expected)
    if got == want:
        return Verdict(True, "exact")
    return Verdict(False, "exact", f"expected {_clip(want)!r}, got {_clip(got)!r}")


# --- mentions ------------------------------------------------------------------------------------


def mentions_any(answer: str, accepted: Sequence[str]) -> Verdict:
    """Pass when the answer names one of `accepted` as a whole word (case kept: code names are exact).

    For questions whose answer is a name inside a sentence ("It is defined in `src/app.py`."): a
    path or identifier counts only where it is not part of a longer one (`app.py` is not in
    `webapp.py` nor `src/app.py`, `load` is not in `load_all`); `./app.py` names `app.py`.
    """
    names = [a for a in accepted if a]
    if not names:
        return Verdict(False, "mentions", "no accepted answer was given")
    for name in names:
        if re.search(rf"(?:(?<=\./)|(?<![\w/-])){re.escape(name)}(?![\w/-]|\.\w)", answer):
            return Verdict(True, "mentions")
    shown = ", ".join(repr(_clip(n, 40)) for n in names[:3]) + (" …" if len(names) > 3 else "")
    return Verdict(False, "mentions", f"the answer names none of {shown}")


# --- numeric -------------------------------------------------------------------------------------

# A number as people write it: optional sign, thousands commas (1,234,567), decimals, a leading point.
_NUMBER = re.compile(r"(?<![\d.])[-−]?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
# Whole-answer fractions: `\frac{a}{b}` (or `\dfrac`) and `a/b`; groups: sign, numerator, denominator.
_FRACTIONS = (
    re.compile(r"^([-−]?)\s*\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}$"),
    re.compile(r"^([-−]?)\s*(\d+)\s*/\s*(\d+)$"),
)


def extract_number(text: str) -> Fraction | None:
    """The final number of a free-text answer, exactly, or None when it has none.

    Where to look: the content of the last `\\boxed{...}`, else the text after the last `####`
    (GSM8K's marker), else the whole text. What is there: one number if it is nothing else (`-3/4`,
    `\\frac{3}{4}`, `$1,200`, `50%`), else its last number. Thousands commas, `$`, `%` and a trailing
    full stop are ignored.
    """
    try:
        return _extract_number(text)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None  # a number too long to convert (Python's digit limit), or a zero denominator


def _extract_number(text: str) -> Fraction | None:
    boxed = _last_boxed(text)
    if boxed is not None:
        text = boxed
    elif "####" in text:
        text = text.rsplit("####", 1)[1]
    whole = _parse_number(text)  # "3/4" or "\\frac{3}{4}" is one number, not the 4 at its end
    if whole is not None:
        return whole
    matches = _NUMBER.findall(text)
    return _to_fraction(matches[-1]) if matches else None


def numeric_match(answer: str, expected: str | float | Fraction, rel_tol: float = 1e-6) -> Verdict:
    """Pass when the answer's final number (`extract_number`) equals `expected` within `rel_tol`.

    Integers and fractions compare exactly; `rel_tol` absorbs decimals such as 0.333333 for 1/3. An
    `expected` string goes through `extract_number` too (so "#### 1,234" is fine).
    """
    if isinstance(expected, str):
        want = extract_number(expected)
        if want is None:
            return Verdict(False, "numeric", f"the expected answer {_clip(expected)!r} has no number")
    elif isinstance(expected, float):
        if not math.isfinite(expected):
            return Verdict(False, "numeric", f"the expected answer {expected} is not a finite number")
        want = Fraction(expected)
    else:
        want = Fraction(expected)
    got = extract_number(answer)
    if got is None:
        return Verdict(False, "numeric", "no number in the answer")
    if abs(got - want) <= Fraction(rel_tol) * max(abs(got), abs(want)):  # exact: no float overflow
        return Verdict(True, "numeric")
    return Verdict(False, "numeric", f"expected {_show(want)}, got {_show(got)}")


def _last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return text[i:]  # unbalanced: take the rest


def _parse_number(text: str) -> Fraction | None:
    """A whole string that is one number (`1,234.5`, `-3/4`, `\\frac{3}{4}`, `$12`, `50\\%`), or None."""
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").replace("\\!", "")
    text = text.strip().rstrip(".").strip()
    for pattern in _FRACTIONS:
        m = pattern.match(text)
        if m:
            sign, numerator, denominator = m.groups()
            num, den = _parse_number(numerator), _parse_number(denominator)
            if num is None or den is None or den == 0:
                return None
            return -(num / den) if sign else num / den
    m = _NUMBER.fullmatch(text)
    return _to_fraction(m.group()) if m else None


def _to_fraction(token: str) -> Fraction:
    return Fraction(token.replace(",", "").replace("−", "-"))


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


# --- python tests --------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)


def extract_code(answer: str, entry_point: str | None = None) -> str:
    """The code in an answer: a Markdown fenced block if it has one, else the whole answer.

    Among several blocks: the first Python (or unlabelled) block that defines `entry_point`, else the
    first Python block, else the first block of any language.
    """
    blocks = [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(answer)]
    if not blocks:
        return answer
    python = [code for lang, code in blocks if lang in ("", "python", "py", "python3")]
    if entry_point:
        definition = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
        for code in python:
            if definition.search(code):
                return code
    return python[0] if python else blocks[0][1]


def python_tests(
    code: str,
    tests: str | Sequence[str],
    *,
    entry_point: str | None = None,
    timeout_s: float = 10,
    cpu_s: int = 10,
    memory_mb: int = 512,
    site_packages: bool = False,
    extract: bool = True,
) -> Verdict:
    """Run the candidate `code` with its unit `tests` in the sandbox; pass when every test passes.

    `tests` is assert-style code (MBPP: a list of `assert` lines, or one block), or HumanEval's
    `def check(candidate): ...` with `entry_point` naming the function to pass to it. The code is
    taken from a Markdown fence when the answer has one (`extract_code`). The limits are the
    sandbox's (`run_python`); `site_packages=True` for tasks that import installed packages.

    The program is the candidate, then the tests, then a line printing a random marker; the verdict
    needs exit status 0 *and* the marker, so a candidate that calls `sys.exit(0)` or `os._exit(0)`
    before the tests run fails. (A candidate that reads the harness to forge the marker, or returns
    objects that equal anything, is beyond what this checks.) `extract=False` takes `code` as it
    is, for a caller that already extracted it and put more around it.
    """
    candidate = extract_code(code, entry_point) if extract else code
    test_code = tests if isinstance(tests, str) else "\n".join(tests)
    marker = f"katpilot-tests-passed-{secrets.token_hex(16)}"
    parts = [candidate, "", "# --- tests ---", test_code]
    if entry_point:
        parts.append(f"check({entry_point})")
    parts.append(f"import os as _kp_os\n_kp_os.write(1, b'\\n{marker}\\n')")
    program = "\n".join(parts) + "\n"
    result = run_python(program, timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, site_packages=site_packages)
    return _tests_verdict(result, marker)


def _tests_verdict(result: SandboxResult, marker: str) -> Verdict:
    if result.ok and marker in result.stdout:
        return Verdict(True, "python_tests")
    if result.reason is not None and not (result.ok and result.refused):
        return Verdict(False, "python_tests", result.reason)
    if result.returncode != 0:
        last = _last_line(result.stderr)
        return Verdict(False, "python_tests", last or f"exit status {result.returncode}")
    return Verdict(False, "python_tests", "the program exited before the tests finished")


# --- ast -----------------------------------------------------------------------------------------


def ast_match(answer: str, expected: str) -> Verdict:
    """Pass when the answer's Python code has the same syntax tree as the expected code.

    The code is taken with `extract_code`; both sides are dedented and parsed, docstrings (a string
    constant opening a module, class or function body) are dropped, and the trees are compared
    without positions: reformatting, comments and docstrings do not count, a changed operator does.
    Code too deep to compare (`ast` recurses: `x+x+...` with thousands of terms) fails with the reason.
    """
    want, error = _python_tree(expected)
    if error:
        return Verdict(False, "ast", f"the expected code {error}")
    got, error = _python_tree(extract_code(answer))
    if error:
        return Verdict(False, "ast", f"the answer {error}")
    if got == want:
        return Verdict(True, "ast")
    return Verdict(False, "ast", "the answer's code differs from the expected code")


def _python_tree(code: str) -> tuple[str, str]:
    """(the code's tree dumped without positions and docstrings, "") or ("", why it cannot be compared)."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError as exc:
        return "", f"does not parse (line {exc.lineno}: {exc.msg})"
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, nesting too deep
        return "", f"does not parse ({type(exc).__name__}: {_clip(str(exc))})"
    try:
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                first = node.body[0] if node.body else None
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)
                ):
                    node.body = node.body[1:]
        return ast.dump(tree, annotate_fields=False, include_attributes=False), ""
    except (ValueError, RecursionError, MemoryError) as exc:  # ast.dump recurses: a parsed but too deep tree
        return "", f"is too deeply nested to compare ({type(exc).__name__})"


# --- similar -------------------------------------------------------------------------------------

SIMILARITY_MAX_TOKENS = 2000  # tokens compared per side (the measure is fast; this bounds the memory and time)
_TOKEN = re.compile(r"\w+|[^\w\s]")


def similarity_match(answer: str, expected: str, threshold: float, language: str | None = None) -> Verdict:
    """Pass when the answer's tokens are at least `threshold` similar to the expected text's.

    For code we cannot run and for prose: both sides (the answer's code taken with `extract_code`,
    a fenced block if it has one) become casefolded word and punctuation tokens, compared with
    `text_similarity` (0 nothing shared, 1 the same). `language` (one the index parses, such as
    "javascript") says the texts are code: comments are dropped from both sides first
    (`strip_comments`), so a repeated doc comment or a note on the fix neither helps nor hurts.
    """
    got = extract_code(answer)
    if language:
        got, expected = strip_comments(got, language), strip_comments(expected, language)
    ratio = text_similarity(got, expected)
    if ratio >= threshold:
        return Verdict(True, "similar")
    return Verdict(False, "similar", f"similarity {ratio:.3f} is below the threshold {threshold:g}")


def text_similarity(text: str, other: str) -> float:
    """How alike two texts are, 0..1: 2 * LCS / (len(a) + len(b)) over their word and punctuation tokens.

    Tokens are casefolded, each side cut at SIMILARITY_MAX_TOKENS. LCS is the longest common
    subsequence of the two token lists (difflib's ratio counts matching blocks instead, never more
    than the LCS, and is cubic on repetitive input; on prose and code the two agree closely). It is
    computed bit-parallel (Allison and Dix; Hyyrö): len(b) steps on len(a)-bit integers, a few
    milliseconds at the cap whatever the texts hold.
    """
    a = _TOKEN.findall(text.casefold())[:SIMILARITY_MAX_TOKENS]
    b = _TOKEN.findall(other.casefold())[:SIMILARITY_MAX_TOKENS]
    if not a and not b:
        return 1.0
    return 2 * _lcs_length(a, b) / (len(a) + len(b))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common subsequence of two token lists, bit-parallel (Hyyrö, 2004).

    After each token of `b`, the zero bits of `v` mark the rows of `a` where the LCS table's column
    steps up by one, so their count is the LCS so far; one addition (whose carries run along the
    matches) and three bit operations take `v` to the next column.
    """
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        match = masks.get(token)
        if match is None:
            continue
        u = v & match
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def strip_comments(code: str, language: str) -> str:
    """The code with its comments (the language's tree-sitter comment nodes) replaced by a space.

    `language` is one the index parses (`katpilot.index.languages.LANGUAGES`). Strings that look
    like comments stay (the tree knows them). An unknown language, or anything the parser cannot
    take, gives the code back as it is: never raises.
    """
    try:
        from katpilot.index.languages import LANGUAGES
        from katpilot.index.parse import parse_tree

        spec = LANGUAGES.get(language)
        if spec is None:
            return code
        source = code.encode("utf-8", "surrogatepass")
        spans: list[tuple[int, int]] = []
        stack = [parse_tree(language, source).root_node]
        while stack:
            node = stack.pop()
            if node.type in spec.comments or (node.is_extra and "comment" in node.type):
                spans.append((node.start_byte, node.end_byte))
            else:
                stack.extend(node.children)
        if not spans:
            return code
        parts, last = [], 0
        for start, end in sorted(spans):
            if start >= last:
                parts += [source[last:start], b" "]
                last = end
        parts.append(source[last:])
        return b"".join(parts).decode("utf-8", "surrogatepass")
    except Exception:  # a grammar that failed to load, a parser error: compare the code as it is
        return code


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _clip(lines[-1], 200) if lines else ""


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
