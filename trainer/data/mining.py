"""Training tasks mined from a team's own repository, through the index chat and eval share.

A model that helps with a team's code should practise on that code: completing its functions,
fixing bugs planted in them, writing their docstrings, explaining them, answering questions about
where things are. Mining keeps the ground truth as it goes (the function as written, the
docstring its author wrote, the file the index knows defines a name), so every task can be graded
with eval's `grade`, and each task's reference answer must pass its own verifier or the task is
dropped. Source text comes from the index, which withholds secrets: a function with a withheld
line is never used.

Kinds (see `REPO_KINDS`): "complete" (the body is masked), "fix" (one known bug is injected:
`MUTATIONS`), "docstring" and "explain" (the doc is removed), "question" (eval's repository
questions). Nothing that holds an AutoThink tag (a repository about LLMs may quote `</judge>`) is
mined: it could not be rendered in the AutoThink format.

How code answers are checked (`item.meta["check"]`):

- "generated-tests": a Python function that runs on its own (its free names are builtins; no
  imports, decorators or methods) with parameters of simple annotated types (int, float, bool, str,
  None, and lists, tuples, dicts and unions of them) is run, as written, in the sandbox on seeded
  inputs (edge values and its own literals) at mining time; the task becomes a `python_tests` item
  of `assert f(args) == result` lines, so any correct function passes, however it is written. Kept
  only when the tests tell apart at least two results, the reference passes them and the wrong
  version (the bug, or the masked body) fails them. Done for the tasks that survive `per_kind`, a
  sandbox run or three each.
- "ast": other Python code must have the original's syntax tree (comments, docstrings and layout do
  not count).
- "similar": other languages, by token similarity with comments dropped on both sides; prose
  (docstring, explain) by token similarity.
- "mentions": questions, by the name the answer gives.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import json
import os
import random
import re
import secrets
import symtable
import textwrap
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import tree_sitter as ts

from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem, VerifierName, grade
from katpilot.eval.sandbox import run_python
from katpilot.eval.suites.repo import questions_from_index
from katpilot.eval.verify import strip_comments, text_similarity
from katpilot.gate import has_tag
from katpilot.index import RepoIndex
from katpilot.index.languages import LANGUAGES, language_for
from katpilot.index.parse import Definition, parse_tree
from katpilot.index.secrets import WITHHELD_MARKER
from trainer.data.tasks import REPO_KINDS, Task

MIN_LINES, MAX_LINES = 3, 60  # functions mined, by their number of lines
MIN_DOC_WORDS = 4  # docstring / explain: a doc shorter than this says too little to grade against
CODE_SIMILARITY = 0.9  # complete / fix in languages we cannot run
DOCSTRING_SIMILARITY = 0.5
EXPLAIN_SIMILARITY = 0.35
MUTATIONS = ("flip-compare", "off-by-one", "wrong-variable", "dropped-return")
QUESTION_CANDIDATES = 200  # questions asked of the index when `per_kind` is None (each scans references)

PyFunction = ast.FunctionDef | ast.AsyncFunctionDef
Edit = tuple[int, int, str]  # replace the function text's [start, end) with the string


def mine_repository(index: RepoIndex, kinds: Collection[str], seed: int = 0, per_kind: int | None = None) -> list[Task]:
    """Tasks of the given kinds (a subset of `REPO_KINDS`) from the repository of an open index.

    Deterministic for a seed; `per_kind` caps each kind (None: every candidate, but at most
    QUESTION_CANDIDATES questions). Ids are `kind:path:qualified_name` (fix adds the mutation),
    stable while the code does not change. Python complete and fix tasks get generated tests where
    their function allows (see the module's docstring), after the capping.
    """
    unknown = sorted(set(kinds) - set(REPO_KINDS))
    if unknown:
        raise KatpilotError(f"unknown task kind(s): {', '.join(unknown)}", f"choose from {', '.join(REPO_KINDS)}")
    index.refresh()
    sources = _sources(index)
    planted: Counter[str] = Counter()  # fix: mutations used so far, so every kind gets its turn
    shown: dict[str, tuple[_Source, str]] = {}  # code task id: its function, and the wrong code shown
    miners: dict[str, Callable[[_Source, random.Random], Task | None]] = {
        "complete": lambda source, rng: _complete(source, rng, shown),
        "fix": lambda source, rng: _fix(source, rng, planted, shown),
        "docstring": _docstring,
        "explain": _explain,
    }
    tasks: list[Task] = []
    for kind in REPO_KINDS:
        if kind not in kinds:
            continue
        if kind == "question":
            tasks += _questions(index, seed, per_kind)
            continue
        rng = random.Random(f"katpilot-data:{seed}:{kind}")
        candidates = list(sources)
        rng.shuffle(candidates)
        mined: list[Task] = []
        miner = miners[kind]
        for source in candidates:
            if per_kind is not None and len(mined) >= per_kind:
                break
            task = miner(source, rng)
            if task is not None:
                mined.append(task)
        tasks += mined
    return _with_generated_tests(tasks, shown, seed)


# --- sources -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """One function or method, with what its file gives to locate its parts."""

    definition: Definition
    key: str  # path:qualified_name, unique (a name defined again in the same file gets @2, @3, ...)
    language: str
    lines: tuple[str, ...]  # the function's whole lines, secrets withheld (the index's text)
    py: PyFunction | None  # Python: its node in the file's ast
    node: ts.Node | None  # other languages: its tree-sitter node

    @property
    def path(self) -> str:
        return self.definition.path

    @property
    def name(self) -> str:
        return self.definition.qualified_name

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def code(self) -> str:
        """The function as the prompts show it and as the expected answer: dedented."""
        return textwrap.dedent(self.text)

    def offset(self, row: int, byte_col: int) -> int:
        """The position in `text` of a file position (row, column in UTF-8 bytes)."""
        first = self.definition.start[0]
        if row - first >= len(self.lines):
            return len(self.text)  # the start of the row after the function
        before = sum(len(line) + 1 for line in self.lines[: row - first])
        line = self.lines[row - first]
        return before + len(line.encode("utf-8")[:byte_col].decode("utf-8", "ignore"))

    def edited(self, edits: list[Edit]) -> str:
        """The dedented function text with non-overlapping edits applied."""
        text = self.text
        for start, end, replacement in sorted(edits, reverse=True):
            text = text[:start] + replacement + text[end:]
        return textwrap.dedent(text)


def _sources(index: RepoIndex) -> list[_Source]:
    """The functions and methods the tasks may use, in the index's (path, position) order."""
    by_path: dict[str, list[Definition]] = {}
    for d in index.definitions():
        if d.kind in ("function", "method") and not d.name.startswith("__"):
            by_path.setdefault(d.path, []).append(d)
    sources: list[_Source] = []
    for path, definitions in by_path.items():
        language = language_for(path)
        try:
            text = index.read_text(path).text
        except KatpilotError:
            continue  # vanished or changed since the refresh
        if language is None:
            continue
        lines = text.split("\n")  # rows as tree-sitter counts them
        py_nodes: dict[tuple[int, str], PyFunction] = {}
        tree: ts.Tree | None = None
        if language == "python":
            module = _parse_python(text)
            if module is None:
                continue
            py_nodes = {
                (n.lineno - 1, n.name): n
                for n in ast.walk(module)
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
        else:
            tree = parse_tree(language, text.encode("utf-8"))
        seen: Counter[str] = Counter()
        for d in definitions:
            seen[d.qualified_name] += 1
            first, last = d.start[0], d.end[0]
            if d.end[1] == 0 and last > first:
                last -= 1  # a range that ends at the start of the next line
            body = tuple(lines[first : last + 1])
            if not MIN_LINES <= len(body) <= MAX_LINES or WITHHELD_MARKER in "\n".join(body) + d.doc:
                continue
            py = py_nodes.get((first, d.name))
            node = _ts_definition(tree, d) if tree is not None else None
            if py is None and node is None:
                continue
            count = seen[d.qualified_name]
            key = f"{path}:{d.qualified_name}" + (f"@{count}" if count > 1 else "")
            sources.append(_Source(d, key, language, body, py, node))
    return sources


def _parse_python(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # Python 2, newer syntax than ours, NUL bytes, nesting too deep


def _ts_definition(tree: ts.Tree, definition: Definition) -> ts.Node | None:
    """The tree-sitter node of a definition that has a body (the smallest one over its range)."""
    node: ts.Node | None = tree.root_node.descendant_for_point_range(definition.start, definition.end)
    while node is not None and node.start_point == definition.start and node.end_point == definition.end:
        if _ts_body(node) is not None:
            return node
        node = node.parent
    return None


def _ts_body(node: ts.Node) -> ts.Node | None:
    body = node.child_by_field_name("body")
    value = node.child_by_field_name("value")  # const f = (x) => { ... }
    if body is None and value is not None:
        body = value.child_by_field_name("body")
    return body


# --- kinds ---------------------------------------------------------------------------------------


def _complete(source: _Source, rng: random.Random, shown: dict[str, tuple[_Source, str]]) -> Task | None:
    """The function with its body masked; the answer is the whole function."""
    masked = _masked(source)
    if masked is None:
        return None
    prompt = (
        f"Here is the function `{source.name}` from `{source.path}` with its body left out:\n\n"
        f"{_fence(masked, source.language)}\n\n"
        "Write the whole function, signature included, and answer with it in one code block."
    )
    task = _code_task("complete", source, source.key, prompt, wrong=masked)
    if task is not None:
        shown[task.id] = (source, masked)
    return task


def _fix(
    source: _Source, rng: random.Random, planted: Counter[str], shown: dict[str, tuple[_Source, str]]
) -> Task | None:
    """The function with one known bug injected; the answer is the function as written."""
    for mutation, buggy in _mutants(source, rng, planted):
        prompt = (
            f"This function from `{source.path}` has a bug. Fix it and answer with the corrected function"
            f" in one code block.\n\n{_fence(buggy, source.language)}"
        )
        task = _code_task("fix", source, f"{source.key}:{mutation}", prompt, wrong=buggy)
        if task is not None:
            planted[mutation] += 1
            shown[task.id] = (source, buggy)
            return task
    return None


def _docstring(source: _Source, rng: random.Random) -> Task | None:
    """The function without its doc; the answer is the doc its author wrote."""
    code = _undocumented(source)
    if code is None:
        return None
    what = "docstring" if source.language == "python" else "doc comment"
    prompt = (
        f"Here is the function `{source.name}` from `{source.path}`:\n\n{_fence(code, source.language)}\n\n"
        f"Write a one-paragraph {what} for it. Answer with its text only, without quotes or comment marks."
    )
    return _doc_task("docstring", source, prompt, DOCSTRING_SIMILARITY)


def _explain(source: _Source, rng: random.Random) -> Task | None:
    """The function without its doc; the answer is graded against the doc."""
    code = _undocumented(source)
    if code is None:
        return None
    prompt = (
        f"Here is the function `{source.name}` from `{source.path}`:\n\n{_fence(code, source.language)}\n\n"
        "Explain in one or two sentences what this function does."
    )
    return _doc_task("explain", source, prompt, EXPLAIN_SIMILARITY)


def _questions(index: RepoIndex, seed: int, per_kind: int | None) -> list[Task]:
    """Eval's repository questions (where is X defined, what calls Y) as tasks.

    `per_kind` of them asked (None: QUESTION_CANDIDATES), fewer kept: only names defined once,
    whose answer passes its own verifier.
    """
    size = per_kind if per_kind is not None else QUESTION_CANDIDATES
    tasks = []
    for item in questions_from_index(index, seed, size):
        name = item.meta["name"]
        found = [d for d in index.definitions(name=name.rsplit(".", 1)[-1]) if d.qualified_name == name]
        if len(found) != 1:
            continue  # questions are about names defined once
        definition = found[0]
        meta = {
            "kind": "question",
            "question": item.meta["kind"],
            "name": name,
            "language": language_for(definition.path) or "",
            "check": "mentions",
        }
        item = dataclasses.replace(
            item, id=f"question:{item.meta['kind']}:{definition.path}:{definition.qualified_name}", meta=meta
        )
        task = Task(item, "question", definition.path, name, item.accepted[0])
        if _untagged(task) and grade(item, task.reference).passed:
            tasks.append(task)
    return tasks


def _code_task(kind: str, source: _Source, key: str, prompt: str, wrong: str) -> Task | None:
    """A task whose answer is the original function; None unless it accepts that and rejects `wrong`."""
    verifier: VerifierName = "ast" if source.language == "python" else "similar"
    similarity = CODE_SIMILARITY
    if verifier == "similar" and kind == "fix":
        # The bug is one token or two: the buggy code is above any fixed threshold. Ask for more than it has.
        code, buggy = strip_comments(source.code, source.language), strip_comments(wrong, source.language)
        similarity = max(similarity, (text_similarity(buggy, code) + 1) / 2)
    item = EvalItem(
        id=f"{kind}:{key}",
        prompt=prompt,
        verifier=verifier,
        expected=source.code,
        min_similarity=similarity,
        code_language=source.language if verifier == "similar" else "",
        meta={"kind": kind, "name": source.name, "language": source.language, "check": verifier},
    )
    task = Task(item, kind, source.path, source.name, _fence(source.code, source.language))
    if (
        not _untagged(task)
        or not grade(item, task.reference).passed
        or grade(item, _fence(wrong, source.language)).passed
    ):
        return None
    return task


def _doc_task(kind: str, source: _Source, prompt: str, similarity: float) -> Task | None:
    doc = source.definition.doc
    item = EvalItem(
        id=f"{kind}:{source.key}",
        prompt=prompt,
        verifier="similar",
        expected=doc,
        min_similarity=similarity,
        meta={"kind": kind, "name": source.name, "language": source.language, "check": "similar"},
    )
    task = Task(item, kind, source.path, source.name, doc)
    if not _untagged(task) or not grade(item, doc).passed:
        return None
    return task


def _untagged(task: Task) -> bool:
    """Whether no text of the task holds an AutoThink tag (which no record could render)."""
    item = task.item
    texts = (item.prompt, item.expected, item.tests, task.reference, *item.accepted)
    return not any(has_tag(text) for text in texts)


def _fence(code: str, language: str) -> str:
    """A Markdown code block, its fence longer than any backtick run in the code."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.rstrip()}\n{fence}"


# --- masking -------------------------------------------------------------------------------------


def _masked(source: _Source) -> str | None:
    """The signature (and doc) with the body replaced by a placeholder, or None if it has no body."""
    if source.py is not None:
        statements = _statements_after_docstring(source.py)
        if not statements:
            return None
        row = _starts_line(source, statements[0])
        if row is None:
            return None
        return textwrap.dedent("\n".join([*source.lines[:row], _indent(source.lines[row]) + "..."]))
    assert source.node is not None
    body = _ts_body(source.node)
    if body is None:
        return None
    start, end = source.offset(*body.start_point), source.offset(*body.end_point)
    text = source.text
    comment = LANGUAGES[source.language].line_comment
    if text[start:end].startswith("{"):
        first = source.definition.start[0]
        closing = source.lines[body.end_point[0] - first]
        outer = _indent(closing)
        inside = [_indent(line) for line in source.lines[body.start_point[0] - first + 1 : body.end_point[0] - first]]
        deeper = [indent for indent in inside if len(indent) > len(outer)]
        inner = deeper[0] if deeper else outer + ("\t" if source.language == "go" else "    ")
        placeholder = f"{{\n{inner}{comment} ...\n{outer}}}"
    else:
        placeholder = "/* ... */"
    masked = textwrap.dedent(text[:start] + placeholder + text[end:])
    doc = source.definition.doc
    return f"{comment} {doc}\n{masked}" if doc else masked


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())] if line.strip() else ""


def _undocumented(source: _Source) -> str | None:
    """The function without its doc, when the doc has MIN_DOC_WORDS words (else None)."""
    if len(source.definition.doc.split()) < MIN_DOC_WORDS:
        return None
    if source.py is None:
        return source.code  # a doc comment sits above the definition, outside its lines
    statements = _statements_after_docstring(source.py)
    if not statements or len(statements) == len(source.py.body):
        return None  # no docstring, or nothing but one
    docstring, first = source.py.body[0], source.definition.start[0]
    top, after = _starts_line(source, docstring), _starts_line(source, statements[0])
    bottom = (docstring.end_lineno or docstring.lineno) - 1 - first  # the docstring's last row
    if top is None or after is None or after <= bottom:
        return None  # the docstring shares a row with the def or with the code after it
    code = textwrap.dedent("\n".join(source.lines[:top] + source.lines[bottom + 1 :]))
    return code if _parse_python(code) is not None else None


def _starts_line(source: _Source, statement: ast.stmt) -> int | None:
    """The row in the function (0: its first line) where a body statement starts, decorators included.

    None when the statement shares its row with the def or with code before it.
    """
    starts: list[ast.stmt | ast.expr] = [statement, *_decorators(statement)]
    first = min(starts, key=lambda n: (n.lineno, n.col_offset))
    row = first.lineno - 1 - source.definition.start[0]
    if row <= 0:
        return None
    line = source.lines[row]
    column = len(line.encode("utf-8")[: first.col_offset].decode("utf-8", "ignore"))
    return row if not line[:column].strip() else None


def _statements_after_docstring(function: PyFunction) -> list[ast.stmt]:
    body = function.body
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return body[1:]
    return body


def _decorators(statement: ast.stmt) -> list[ast.expr]:
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return statement.decorator_list
    return []


# --- mutations -----------------------------------------------------------------------------------

_PY_FLIPS: dict[type[ast.cmpop], tuple[str, str]] = {
    ast.Lt: ("<", ">="),
    ast.GtE: (">=", "<"),
    ast.Gt: (">", "<="),
    ast.LtE: ("<=", ">"),
    ast.Eq: ("==", "!="),
    ast.NotEq: ("!=", "=="),
}
_TS_FLIPS = {"<": ">=", ">=": "<", ">": "<=", "<=": ">", "==": "!=", "!=": "==", "===": "!==", "!==": "==="}
_TS_INTEGERS = frozenset({"number", "int_literal", "integer_literal", "decimal_integer_literal", "number_literal"})
_TS_INDEXES = frozenset(
    {"subscript_expression", "index_expression", "array_access", "slice_expression", "range_expression"}
)
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _mutants(source: _Source, rng: random.Random, planted: Counter[str]) -> Iterator[tuple[str, str]]:
    """(mutation, buggy function) candidates: the least planted kinds first, each site in random order."""
    sites = _py_sites(source, rng) if source.py is not None else _ts_sites(source, rng)
    order = sorted(MUTATIONS, key=lambda m: (planted[m], MUTATIONS.index(m)))
    for mutation in order:
        edits = sites.get(mutation, [])
        rng.shuffle(edits)
        for edit in edits:
            buggy = source.edited([edit])
            if buggy != source.code and (source.py is None or _parse_python(buggy) is not None):
                yield mutation, buggy


def _py_sites(source: _Source, rng: random.Random) -> dict[str, list[Edit]]:
    """Where each mutation applies in a Python function, found in its ast."""
    assert source.py is not None
    function = source.py
    arguments = function.args
    params = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    params = [p for p in params if p not in ("self", "cls")]
    sites: dict[str, list[Edit]] = {m: [] for m in MUTATIONS}
    text = source.text
    parents = {child: node for node in ast.walk(function) for child in ast.iter_child_nodes(node)}
    for node in (n for statement in function.body for n in ast.walk(statement)):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _PY_FLIPS:
            old, new = _PY_FLIPS[type(node.ops[0])]
            left = node.left
            start = source.offset((left.end_lineno or left.lineno) - 1, left.end_col_offset or 0)
            end = source.offset(node.comparators[0].lineno - 1, node.comparators[0].col_offset)
            found = re.search(rf"(?<![<>=!]){re.escape(old)}(?![<>=])", text[start:end])
            if found:
                sites["flip-compare"].append((start + found.start(), start + found.end(), new))
        elif isinstance(node, ast.Constant) and type(node.value) is int and _py_bound(node, parents[node]):
            start, end = _py_span(source, node)
            if text[start:end] == str(node.value):
                sites["off-by-one"].append((start, end, str(node.value + 1)))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in params and len(params) > 1:
            start, end = _py_span(source, node)
            sites["wrong-variable"].append((start, end, rng.choice([p for p in params if p != node.id])))
        elif isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Constant) and value.value is None:
                continue  # dropping `return None` changes nothing
            start, _ = _py_span(source, node)
            keyword = re.match(r"return[ \t]*", text[start:])
            if keyword:
                sites["dropped-return"].append((start, start + keyword.end(), ""))
    return sites


def _py_bound(constant: ast.Constant, parent: ast.AST) -> bool:
    """Whether an integer may be a bound or a step (where an off-by-one is a bug one can spot):
    0 or 1, or a comparison's operand, a +/- operand, an index or slice, or an argument of range()."""
    return (
        constant.value in (0, 1)
        or isinstance(parent, ast.Compare | ast.Subscript | ast.Slice)
        or (isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Add | ast.Sub))
        or (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "range")
    )


def _py_span(source: _Source, node: ast.expr | ast.stmt) -> tuple[int, int]:
    start = source.offset(node.lineno - 1, node.col_offset)
    end = source.offset((node.end_lineno or node.lineno) - 1, node.end_col_offset or 0)
    return start, end


def _ts_sites(source: _Source, rng: random.Random) -> dict[str, list[Edit]]:
    """Where each mutation applies in another language's function body, from its tree (no strings or comments)."""
    assert source.node is not None
    body = _ts_body(source.node)
    sites: dict[str, list[Edit]] = {m: [] for m in MUTATIONS}
    if body is None:
        return sites
    params = _ts_params(source.node)
    for node in _walk(body):
        text = (node.text or b"").decode("utf-8", "replace")
        span = (source.offset(*node.start_point), source.offset(*node.end_point))
        parent = node.parent
        if not node.is_named and text in _TS_FLIPS and parent is not None and parent.type == "binary_expression":
            sites["flip-compare"].append((*span, _TS_FLIPS[text]))
        elif node.type in _TS_INTEGERS and _DECIMAL.fullmatch(text) and _ts_bound(text, parent):
            sites["off-by-one"].append((*span, str(int(text) + 1)))
        elif node.type == "identifier" and text in params and len(params) > 1:
            sites["wrong-variable"].append((*span, rng.choice([p for p in params if p != text])))
    return sites


def _ts_bound(literal: str, parent: ts.Node | None) -> bool:
    """`_py_bound` for other languages: 0 or 1, a comparison's or a +/- operand, or an index."""
    if literal in ("0", "1") or parent is None:
        return literal in ("0", "1")
    operator = parent.child_by_field_name("operator")
    if parent.type == "binary_expression" and operator is not None:
        return operator.type in ("+", "-", *_TS_FLIPS)
    return parent.type in _TS_INDEXES


def _ts_params(node: ts.Node) -> list[str]:
    """The parameter names of a function node (identifiers in its parameter list)."""
    params = node.child_by_field_name("parameters")
    value = node.child_by_field_name("value")
    if params is None and value is not None:  # const f = (a, b) => ...
        params = value.child_by_field_name("parameters") or value.child_by_field_name("parameter")
    declarator = node.child_by_field_name("declarator")
    while params is None and declarator is not None:  # C and C++: int *f(int a)
        params = declarator.child_by_field_name("parameters")
        declarator = declarator.child_by_field_name("declarator")
    if params is None:
        return []
    names = [(n.text or b"").decode("utf-8", "replace") for n in _walk(params) if n.type == "identifier"]
    return [n for n in dict.fromkeys(names) if n not in ("self", "this")]


def _walk(node: ts.Node) -> Iterator[ts.Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


# --- generated tests -----------------------------------------------------------------------------

GENERATED_CASES = 40  # inputs tried per function
GENERATED_TESTS = 8  # asserts kept per task
MAX_RESULT_CHARS = 200  # the longest repr of an input or a result a test line may hold
CALL_LIMIT_S = 0.25  # one call of the function in the sandbox; an input that takes longer is dropped
CHECK_BUDGET_S = 3.0  # all the calls of one check run together
_CHECK_WORKERS = max(1, min(4, os.cpu_count() or 1))  # sandbox runs at once (each is a child process)

# Builtins whose result depends on the process or the machine, or that read, write or escape:
# a function that uses them gets no generated tests. Sets are left out too: iterating a set of
# strings is in a different order in each process (hash randomisation).
_UNSAFE_BUILTINS = frozenset(
    {
        "__import__",
        "breakpoint",
        "compile",
        "eval",
        "exec",
        "exit",
        "frozenset",
        "globals",
        "hash",
        "help",
        "id",
        "input",
        "locals",
        "memoryview",
        "open",
        "quit",
        "set",
        "vars",
    }
)
_BUILTINS = frozenset(dir(builtins))
# What a function with generated tests may not hold: imports, scope declarations, generators and
# coroutines, sets (see above).
_UNTESTABLE_NODES = (
    ast.Import,
    ast.ImportFrom,
    ast.Global,
    ast.Nonlocal,
    ast.Yield,
    ast.YieldFrom,
    ast.Await,
    ast.AsyncFunctionDef,
    ast.Set,
    ast.SetComp,
)

# Compares a result with the expected one, floats within a relative 1e-9 (a sum taken in another
# order is still right); in the tests only where a result holds a float, and in the check run.
_SAME = """\
def _kp_same(got, want):
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return got == want or abs(got - want) <= 1e-9 * max(1.0, abs(want))
    if isinstance(want, (list, tuple)):
        return (
            type(got) is type(want) and len(got) == len(want) and all(_kp_same(g, w) for g, w in zip(got, want))
        )
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_kp_same(got[k], want[k]) for k in want)
    return got == want
"""

# The check run: the original and the wrong version, each in its own namespace, called on every
# input (the original twice: a result must repeat), each call under an interval timer. One line per
# input on stdout, after a marker: [index, "keep", repr of the result, "caught" | "same" | "slow"]
# or [index, "drop"].
_CHECK = """\
import ast as _kp_ast
import json as _kp_json
import signal as _kp_signal
import time as _kp_time

{same}

class _KpSlow(BaseException):
    pass


def _kp_alarm(signum, frame):
    raise _KpSlow()


_kp_signal.signal(_kp_signal.SIGALRM, _kp_alarm)


def _kp_run(call, space):
    try:
        try:
            _kp_signal.setitimer(_kp_signal.ITIMER_REAL, {limit!r}, {limit!r})
            return "ok", eval(call, space)
        finally:
            _kp_signal.setitimer(_kp_signal.ITIMER_REAL, 0)
    except _KpSlow:
        return "slow", None
    except BaseException:
        return "raised", None


def _kp_shown(value):
    try:
        text = repr(value)
        back = _kp_ast.literal_eval(text)
    except BaseException:
        return None
    if len(text) > {max_chars!r} or type(back) is not type(value) or back != value:
        return None
    return text


_kp_original, _kp_wrong = {{}}, {{}}
exec(compile({original!r}, "<original>", "exec"), _kp_original)
exec(compile({wrong!r}, "<wrong>", "exec"), _kp_wrong)
_kp_start = _kp_time.monotonic()
for _kp_index, _kp_call in enumerate({calls!r}):
    if _kp_time.monotonic() - _kp_start > {budget!r}:
        break
    _kp_line = [_kp_index, "drop"]
    try:
        (_kp_s1, _kp_v1), (_kp_s2, _kp_v2) = _kp_run(_kp_call, _kp_original), _kp_run(_kp_call, _kp_original)
        _kp_text = _kp_shown(_kp_v1) if _kp_s1 == _kp_s2 == "ok" else None
        if _kp_text is not None and _kp_text == _kp_shown(_kp_v2):
            _kp_sw, _kp_vw = _kp_run(_kp_call, _kp_wrong)
            if _kp_sw == "slow":
                _kp_verdict = "slow"
            elif _kp_sw == "ok" and _kp_same(_kp_vw, _kp_ast.literal_eval(_kp_text)):
                _kp_verdict = "same"
            else:
                _kp_verdict = "caught"
            _kp_line = [_kp_index, "keep", _kp_text, _kp_verdict]
    except _KpSlow:
        pass
    print({marker!r} + _kp_json.dumps(_kp_line), flush=True)
"""


@dataclass(frozen=True)
class _Type:
    """A parameter's annotated type: a scalar ("int", "float", "bool", "str", "none") or
    "list", "tuple" (fixed), "tuple..." (any length), "dict", "union" of the types in `args`."""

    kind: str
    args: tuple[_Type, ...] = ()


@dataclass(frozen=True)
class _Signature:
    """What a generated test needs of a function: its name, parameters and literals."""

    name: str
    positional: tuple[tuple[str, _Type], ...]
    keyword: tuple[tuple[str, _Type], ...]
    ints: tuple[int, ...]
    floats: tuple[float, ...]
    strings: tuple[str, ...]


def _with_generated_tests(tasks: list[Task], shown: dict[str, tuple[_Source, str]], seed: int) -> list[Task]:
    """The tasks, each Python complete / fix task checked by generated tests where its function allows."""
    jobs = [(i, task) for i, task in enumerate(tasks) if task.id in shown and task.item.verifier == "ast"]
    if not jobs:
        return tasks

    def upgrade(job: tuple[int, Task]) -> tuple[int, Task | None]:
        index, task = job
        source, wrong = shown[task.id]
        try:
            return index, _generated_task(task, source, wrong, seed)
        except Exception:  # a sandbox that cannot start, anything unforeseen: the task keeps its ast check
            return index, None

    result = list(tasks)
    with ThreadPoolExecutor(max_workers=_CHECK_WORKERS) as pool:
        for index, upgraded in pool.map(upgrade, jobs):
            if upgraded is not None:
                result[index] = upgraded
    return result


def _generated_task(task: Task, source: _Source, wrong: str, seed: int) -> Task | None:
    """The task checked by tests generated from running its function, or None where that cannot be done."""
    signature = _testable(source)
    if signature is None:
        return None
    calls = _calls(signature, random.Random(f"katpilot-data:{seed}:cases:{source.key}"))
    if not calls:
        return None
    tests = _tests(calls, source.code, wrong)
    if tests is None:
        return None
    item = dataclasses.replace(
        task.item,
        verifier="python_tests",
        tests=tests,
        entry_point=signature.name,
        meta={**task.item.meta, "check": "generated-tests"},
    )
    upgraded = dataclasses.replace(task, item=item)
    if not _untagged(upgraded) or not grade(item, task.reference).passed:
        return None
    if grade(item, _fence(wrong, source.language)).passed:
        return None
    return upgraded


def _testable(source: _Source) -> _Signature | None:
    """The signature of a function tests can be generated for (see the module's docstring), else None."""
    function = source.py
    d = source.definition
    if not isinstance(function, ast.FunctionDef) or d.kind != "function" or d.parent or function.decorator_list:
        return None
    arguments = function.args
    if arguments.vararg is not None or arguments.kwarg is not None:
        return None
    positional: list[tuple[str, _Type]] = []
    keyword: list[tuple[str, _Type]] = []
    for group, arguments_of in ((positional, arguments.posonlyargs + arguments.args), (keyword, arguments.kwonlyargs)):
        for argument in arguments_of:
            kind = _annotated_type(argument.annotation)
            if kind is None:
                return None
            group.append((argument.arg, kind))
    if not positional and not keyword:
        return None  # nothing to vary
    nested = [n for statement in function.body for n in ast.walk(statement)]
    for node in nested:
        if isinstance(node, _UNTESTABLE_NODES):
            return None
        if isinstance(node, ast.Name) and node.id in _UNSAFE_BUILTINS:
            return None
    if not _self_contained(source.code, function.name):
        return None
    body = _statements_after_docstring(function)
    constants = [n.value for statement in body for n in ast.walk(statement) if isinstance(n, ast.Constant)]
    ints = [c for c in constants if type(c) is int and abs(c) <= 10**6]
    numbers = [c for c in constants if isinstance(c, int | float) and not isinstance(c, bool) and abs(c) <= 10**6]
    return _Signature(
        name=function.name,
        positional=tuple(positional),
        keyword=tuple(keyword),
        ints=tuple(dict.fromkeys(v for c in ints for v in (c - 1, c, c + 1))),
        floats=tuple(dict.fromkeys(float(c) for c in numbers)),
        strings=tuple(dict.fromkeys(c for c in constants if type(c) is str and len(c) <= 30)),
    )


def _annotated_type(node: ast.expr | None) -> _Type | None:
    """The `_Type` of an annotation written with builtin types only (`list[int]`, `int | None`), else None."""
    if isinstance(node, ast.Name) and node.id in ("int", "float", "bool", "str"):
        return _Type(node.id)
    if isinstance(node, ast.Constant) and node.value is None:
        return _Type("none")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotated_type(node.left), _annotated_type(node.right)
        return _Type("union", (left, right)) if left is not None and right is not None else None
    if not isinstance(node, ast.Subscript) or not isinstance(node.value, ast.Name):
        return None
    outer = node.value.id
    parts = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if outer == "tuple" and len(parts) == 2 and isinstance(parts[1], ast.Constant) and parts[1].value is Ellipsis:
        element = _annotated_type(parts[0])
        return _Type("tuple...", (element,)) if element is not None else None
    args = [_annotated_type(part) for part in parts]
    if any(a is None for a in args):
        return None
    known = tuple(a for a in args if a is not None)
    if outer == "list" and len(known) == 1:
        return _Type("list", known)
    if outer == "tuple" and 1 <= len(known) <= 4:
        return _Type("tuple", known)
    if outer == "dict" and len(known) == 2 and known[0].kind in ("int", "str", "bool"):
        return _Type("dict", known)
    return None


def _self_contained(code: str, name: str) -> bool:
    """Whether the function's free names (and its annotations' and defaults') are builtins or itself."""
    try:
        module = symtable.symtable(code, "<mined>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for symbol in module.get_symbols():  # what the def line evaluates: annotations, defaults
        if symbol.is_referenced() and not symbol.is_assigned() and symbol.get_name() not in _BUILTINS:
            return False
    tables = list(module.get_children())
    while tables:
        table = tables.pop()
        tables += table.get_children()
        for symbol in table.get_symbols():
            if symbol.is_declared_global():
                return False
            used = symbol.get_name()
            if symbol.is_global() and symbol.is_referenced() and used != name and used not in _BUILTINS:
                return False
    return True


def _calls(signature: _Signature, rng: random.Random) -> list[str]:
    """Distinct calls of the function on seeded inputs, as source text (`f(3, 5, flag=True)`)."""
    ints = list(dict.fromkeys([0, 1, -1, 2, 3, 10, *signature.ints]))
    floats = list(dict.fromkeys([0.0, 1.0, -1.0, 0.5, 2.5, 10.0, *signature.floats]))
    strings = list(dict.fromkeys(["", "a", "ab", "abc", "hello world", "A-b_c 1", *signature.strings]))

    def value(kind: _Type, depth: int = 0) -> Any:
        if kind.kind == "int":
            return rng.choice(ints) if rng.random() < 0.75 else rng.randint(-20, 20)
        if kind.kind == "float":
            return rng.choice(floats) if rng.random() < 0.75 else round(rng.uniform(-10, 10), 2)
        if kind.kind == "bool":
            return rng.random() < 0.5
        if kind.kind == "str":
            if rng.random() < 0.75:
                return rng.choice(strings)
            return "".join(rng.choice("abcdefgh xyz") for _ in range(rng.randint(1, 8)))
        if kind.kind == "none":
            return None
        if kind.kind == "union":
            return value(rng.choice(kind.args), depth)
        size = rng.choice([0, 1, 2, 3, 4, 5]) if depth < 2 else rng.choice([0, 1])
        if kind.kind == "list":
            return [value(kind.args[0], depth + 1) for _ in range(size)]
        if kind.kind == "tuple...":
            return tuple(value(kind.args[0], depth + 1) for _ in range(size))
        if kind.kind == "tuple":
            return tuple(value(a, depth + 1) for a in kind.args)
        return {value(kind.args[0], depth + 1): value(kind.args[1], depth + 1) for _ in range(size)}  # dict

    calls: list[str] = []
    for _ in range(4 * GENERATED_CASES):
        if len(calls) >= GENERATED_CASES:
            break
        args = [repr(value(kind)) for _, kind in signature.positional]
        args += [f"{name}={value(kind)!r}" for name, kind in signature.keyword]
        if any(len(a) > MAX_RESULT_CHARS for a in args):
            continue
        call = f"{signature.name}({', '.join(args)})"
        if call not in calls:
            calls.append(call)
    return calls


def _tests(calls: list[str], original: str, wrong: str) -> str | None:
    """Assert lines from one sandbox run of the original function on the calls, or None.

    None when the run fails, when fewer than two distinct results come back (a constant would pass),
    or when no input tells the wrong version apart (it raises, or returns another result).
    Inputs on which the wrong version runs too long are left out (the check would wait for them).
    """
    marker = f"katpilot-check-{secrets.token_hex(8)}:"
    program = _CHECK.format(
        same=_SAME,
        limit=CALL_LIMIT_S,
        max_chars=MAX_RESULT_CHARS,
        original=original,
        wrong=wrong,
        calls=calls,
        budget=CHECK_BUDGET_S,
        marker=marker,
    )
    result = run_python(program, timeout_s=CHECK_BUDGET_S + 5, cpu_s=int(CHECK_BUDGET_S) + 5)
    if not result.ok:
        return None
    kept: list[tuple[int, str, str]] = []  # (call index, result, verdict on the wrong version)
    for line in result.stdout.splitlines():
        _, found, rest = line.partition(marker)  # after anything the function printed without a newline
        if found:
            record = json.loads(rest)
            if record[1] == "keep" and record[3] != "slow":
                kept.append((int(record[0]), str(record[2]), str(record[3])))
    caught = [k for k in kept if k[2] == "caught"]
    if not caught or len({k[1] for k in kept}) < 2:
        return None
    chosen: dict[int, tuple[int, str, str]] = {k[0]: k for k in caught[:2]}
    seen = {k[1] for k in chosen.values()}
    for k in kept:  # one input per distinct result first, then the rest, in order
        if len(chosen) < GENERATED_TESTS and k[1] not in seen:
            chosen[k[0]] = k
            seen.add(k[1])
    for k in kept:
        if len(chosen) < GENERATED_TESTS:
            chosen.setdefault(k[0], k)
    lines = []
    approximate = False
    for index, expected, _ in sorted(chosen.values()):
        if _holds_float(ast.literal_eval(expected)):
            approximate = True
            lines.append(f"assert _kp_same({calls[index]}, {expected})")
        else:
            lines.append(f"assert {calls[index]} == {expected}")
    return (_SAME + "\n\n" if approximate else "") + "\n".join(lines) + "\n"


def _holds_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_float(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_float(v) for v in value.values())
    return False
