"""Code actions without I/O: what each action asks the model, and how its answer becomes an edit.

Explain shows text; Fix and Add docstring replace the target lines; Write tests puts the tests in
the language's usual test file. Edits are built from the answer segment only (the session never
hands thinking to this module), from the first fenced code block of the answer, or the whole answer
when the model wrote bare code.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types


@dataclass(frozen=True)
class ActionSpec:
    """One code action: its id (the `data` and command suffix), title, kind and request."""

    id: str
    title: str
    kind: str
    ask: str  # what the model is asked; {language} is filled in
    edits: bool  # False: the answer is shown, not applied


ACTIONS: dict[str, ActionSpec] = {
    spec.id: spec
    for spec in (
        ActionSpec(
            "explain",
            "katpilot: Explain",
            types.CodeActionKind.Empty,
            "Explain what this {language} code does, briefly.",
            False,
        ),
        ActionSpec(
            "fix",
            "katpilot: Fix",
            types.CodeActionKind.QuickFix,
            "Fix the bugs in this {language} code. Reply with the whole corrected code in one fenced "
            "code block, then at most two sentences on what you changed.",
            True,
        ),
        ActionSpec(
            "docstring",
            "katpilot: Add docstring",
            types.CodeActionKind.RefactorRewrite,
            "Add a docstring (or doc comment) to this {language} code. Reply with the whole code, "
            "docstring included, in one fenced code block; change nothing else.",
            True,
        ),
        ActionSpec(
            "tests",
            "katpilot: Write tests",
            types.CodeActionKind.Source,
            "Write unit tests ({framework}) for this {language} code, which lives in {module}. Reply "
            "with the complete test code in one fenced code block.",
            True,
        ),
    )
}

_FRAMEWORKS = {
    "python": "pytest",
    "javascript": "node:test",
    "typescript": "node:test",
    "go": "the testing package",
    "rust": "#[test] functions",
    "java": "JUnit 5",
    "c": "assert.h",
    "cpp": "plain asserts",
}
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def question(spec: ActionSpec, code: str, language: str, module: str, diagnostics: list[str]) -> str:
    """The user message for an action on `code`."""
    ask = spec.ask.format(
        language=language or "source", framework=_FRAMEWORKS.get(language, "the usual framework"), module=module
    )
    problems = "".join(f"\n- {d}" for d in diagnostics)
    if problems and spec.id == "fix":
        ask += f"\nThe editor reports:{problems}"
    return f"{ask}\n\n```{language}\n{code.rstrip()}\n```"


def extract_code(answer: str) -> str:
    """The first fenced block of an answer, else the answer itself (bare code)."""
    match = _FENCE.search(answer)
    code = match.group(1) if match else answer
    return code.strip("\n")


def reindent(code: str, indent: str) -> str:
    """Code moved to the target's indentation (a method the model wrote at column 0)."""
    body = textwrap.dedent(code)
    return "\n".join(indent + line if line.strip() else "" for line in body.split("\n"))


def leading_indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def where_tests_go(source: Path, language: str, roots: list[Path]) -> Path:
    """Where tests for `source` usually live: tests/test_x.py, x.test.ts, x_test.go, ..."""
    stem, suffix = source.stem, source.suffix
    if language == "python":
        root = next((r for r in roots if r == source.parent or r in source.parents), source.parent)
        tests_dir = root / "tests"
        return (tests_dir if tests_dir.is_dir() else source.parent) / f"test_{stem}{suffix}"
    if language in ("javascript", "typescript"):
        return source.with_name(f"{stem}.test{suffix}")
    if language == "go":
        return source.with_name(f"{stem}_test.go")
    if language == "java":
        return source.with_name(f"{stem}Test.java")
    if language == "rust":
        return source  # Rust keeps unit tests in the module itself
    return source.with_name(f"test_{stem}{suffix}")


def replace_edit(uri: str, version: int | None, target: types.Range, new_text: str) -> types.WorkspaceEdit:
    """Replace the target lines in one document."""
    edit = types.TextEdit(target, new_text)
    if version is None:
        return types.WorkspaceEdit(changes={uri: [edit]})
    return types.WorkspaceEdit(
        document_changes=[types.TextDocumentEdit(types.OptionalVersionedTextDocumentIdentifier(uri, version), [edit])]
    )


def append_edit(uri: str, end: types.Position, text: str, ends_with_newline: bool) -> types.WorkspaceEdit:
    """Add text at the end of an existing document."""
    lead = "\n" if ends_with_newline else "\n\n"
    return types.WorkspaceEdit(changes={uri: [types.TextEdit(types.Range(end, end), lead + text.rstrip("\n") + "\n")]})


def create_file_edit(uri: str, text: str) -> types.WorkspaceEdit:
    """Create a new file holding `text` (needs the client's resource-operation support)."""
    start = types.Position(0, 0)
    return types.WorkspaceEdit(
        document_changes=[
            types.CreateFile(uri=uri, options=types.CreateFileOptions(overwrite=False, ignore_if_exists=True)),
            types.TextDocumentEdit(
                types.OptionalVersionedTextDocumentIdentifier(uri, None),
                [types.TextEdit(types.Range(start, start), text.rstrip("\n") + "\n")],
            ),
        ]
    )
