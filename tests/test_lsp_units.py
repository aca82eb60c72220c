"""The language server's pure parts: completion boundaries, prompts, positions, settings, edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types

from katpilot.config import Settings
from lsp.actions import ACTIONS, extract_code, question, reindent, where_tests_go
from lsp.completion import (
    CURSOR,
    CursorContext,
    chat_question,
    clean_chat_answer,
    cut_completion,
    fim_prompt,
    split_around,
)
from lsp.documents import BadPosition, OpenDocument, inside
from lsp.settings import LspSettings, apply_options


def ctx(prefix: str, suffix: str = "", repo: list[str] | None = None) -> CursorContext:
    return CursorContext(prefix, suffix, "python", "pkg/mod.py", repo or [])


# -- where a completion stops ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "suffix", "generated", "expected"),
    [
        # a blank line ends it
        ("def f(x):\n    ", "", "return x * 2\n\ndef g():", "return x * 2"),
        # a line that leaves the cursor's block ends it
        ("def f(x):\n    ", "", "y = x + 1\n    return y\nprint(f(2))", "y = x + 1\n    return y"),
        # inside a line: this line only
        ("total = add(", ")\n", "a, b\nc", "a, b"),
        ("x = ", " + 1\n", "compute()\nmore()", "compute()"),
        # a bracket the prefix opened, closed by the completion while the editor already paired it
        ("total = add(", ")", "a, b) + 1", "a, b"),
        # the same without the paired closer: kept, cut at the end of its line
        ("total = add(\n    ", "", "a,\n    b)\nprint(total)", "a,\n    b)"),
        # a gate tag or a fence never reaches the editor
        ("x = ", "", "1 <think>hmm", "1"),
        ("x = ", "", "1\n```\nmore", "1"),
        ("x = ", "", "2 </answer>", "2"),
        # a closing brace at lower indentation belongs to the block being completed
        ("int f() {\n  ", "", "return 1;\n}\nint g() {", "return 1;\n}"),
    ],
)
def test_cut_completion_at_boundaries(prefix: str, suffix: str, generated: str, expected: str) -> None:
    kept, done = cut_completion(generated, ctx(prefix, suffix))
    assert (kept, done) == (expected, True)


def test_cut_completion_waits_while_no_boundary_is_seen() -> None:
    assert cut_completion("return x", ctx("def f(x):\n    ")) == ("return x", False)
    assert cut_completion("\n    return x", ctx("def f(x):")) == ("\n    return x", False)


@given(st.text(alphabet="ab(){}[]\n :<>/`'\"", max_size=60))
def test_cut_completion_only_ever_shortens(generated: str) -> None:
    kept, _ = cut_completion(generated, ctx("def f(x):\n    ", ")"))
    assert generated.startswith(kept.rstrip()) or generated.startswith(kept)
    assert "<think" not in kept and "```" not in kept


def test_chat_answers_lose_fences_and_echoes() -> None:
    c = ctx("def area(r):\n    return 3.14 * ", "")
    assert clean_chat_answer("```python\nr * r\n```", c) == "r * r\n```"
    assert clean_chat_answer("return 3.14 * r * r", c) == " r * r"
    assert clean_chat_answer("``", c) == ""  # a fence still arriving
    assert clean_chat_answer(f"def area(r):\n    return 3.14 * {CURSOR}r * r", c) == "r * r"


# -- prompts ---------------------------------------------------------------------------------------


def test_split_around_keeps_whole_lines_near_the_cursor() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    offset = text.index("line 50") + 4
    before, after = split_around(text, offset, 80)
    assert before.endswith("line") and before.startswith("line ") and len(before) <= 60
    assert after.startswith(" 50\n") and len(after) <= 80 - len(before)
    assert split_around("abc", 1, 1000) == ("a", "bc")


def test_prompts_carry_code_cursor_and_repository_context() -> None:
    c = ctx("def f(x):\n    ", "\n\nprint(f(1))", ["calc.py:1: def add(a, b)"])
    question_text = chat_question(c)
    assert f"def f(x):\n    {CURSOR}\n\nprint(f(1))" in question_text
    assert "calc.py:1: def add(a, b)" in question_text
    fim = fim_prompt(c, ("<PRE>", "<SUF>", "<MID>"), "#")
    assert fim == "<PRE># calc.py:1: def add(a, b)\ndef f(x):\n    <SUF>\n\nprint(f(1))<MID>"


# -- documents -------------------------------------------------------------------------------------


def doc(text: str, encoding: str = "utf-16") -> OpenDocument:
    return OpenDocument("file:///w/a.py", text, Path("/w/a.py"), "python", encoding)


def test_positions_follow_the_negotiated_encoding() -> None:
    text = 'x = "😋é"\ny = 1\n'
    d16, d8, d32 = doc(text), doc(text, "utf-8"), doc(text, "utf-32")
    quote = text.index('"', 5)
    assert d16.offset(types.Position(0, 8)) == quote  # the emoji is 2 UTF-16 units
    assert d8.offset(types.Position(0, 11)) == quote  # 4 bytes + 2 bytes
    assert d32.offset(types.Position(0, 7)) == quote
    assert d16.position(quote) == types.Position(0, 8)
    assert d16.offset(types.Position(1, 99)) == text.index("\n", 10)  # past the end: the line's end
    assert d16.offset(types.Position(2, 0)) == len(text)  # the empty last line after the newline
    with pytest.raises(BadPosition):
        d16.offset(types.Position(3, 0))
    assert d16.byte_column(quote) == (0, 5 + 4 + 2)  # 'x = "', the emoji, the é


def test_line_range_covers_whole_lines() -> None:
    d = doc("a\nb\nc")
    assert d.line_range(0, 1) == types.Range(types.Position(0, 0), types.Position(2, 0))
    assert d.line_range(1, 2) == types.Range(types.Position(1, 0), types.Position(2, 1))


def test_inside_resolves_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    assert inside(root / "pkg" / "a.py", [root.resolve()])
    assert not inside(root / "link" / "a.py", [root.resolve()])
    assert not inside(tmp_path / "ws2" / "a.py", [root.resolve()])


# -- settings --------------------------------------------------------------------------------------


def test_options_apply_with_the_config_rules() -> None:
    current = LspSettings(base=Settings())
    updated, problems, reload = apply_options(
        current, {"katpilot": {"think": "off", "threshold": "0.25", "debounce_ms": 0}}
    )
    assert problems == [] and not reload
    assert (updated.base.think, updated.base.threshold, updated.debounce_ms) == ("off", 0.25, 0)
    updated, problems, reload = apply_options(
        updated, {"model": "other.gguf", "budget": 0, "max_file_bytes": True, "colour": 1}
    )
    assert reload and updated.base.model == "other.gguf"
    assert updated.base.budget is None and updated.max_file_bytes == current.max_file_bytes
    assert len(problems) == 3
    assert any("budget" in p and ">= 1" in p for p in problems)
    assert any("'colour'" in p for p in problems)
    assert apply_options(current, None) == (current, [], False)
    # Eglot sends one settings object to every server: other servers' sections are not ours.
    shared, problems, _ = apply_options(current, {"pylsp": {"plugins": {}}, "think": "on"})
    assert problems == [] and shared.base.think == "on"
    assert apply_options(current, {"katpilot": {"pylsp": {}}})[1] == [
        "unknown setting 'pylsp': see the editor guide (docs/lsp.md) for the list"
    ]
    coder, problems, _ = apply_options(current, {"completion_model": "coder"})
    assert problems == [] and coder.completion_settings().model == "coder" and coder.base.model is None
    assert current.completion_settings() is current.base
    assert apply_options(current, {"completion_model": 3})[1][0].startswith("setting completion_model must be")
    assert apply_options(current, [1])[1] == ["settings must be an object, got list"]


# -- actions ---------------------------------------------------------------------------------------


def test_extract_code_takes_the_first_fenced_block_or_bare_code() -> None:
    answer = "Here:\n```python\ndef f():\n    return 1\n```\nThen:\n```\nother\n```"
    assert extract_code(answer) == "def f():\n    return 1"
    assert extract_code("def f():\n    return 2\n") == "def f():\n    return 2"
    assert extract_code("```python\ndef cut():\n    pass") == "def cut():\n    pass"  # unclosed fence


def test_reindent_moves_code_to_the_target_indentation() -> None:
    assert reindent("def m(self):\n    return 1", "    ") == "    def m(self):\n        return 1"
    assert reindent("    x = 1\n\n    y = 2", "") == "x = 1\n\ny = 2"


def test_test_files_go_where_each_language_keeps_them(tmp_path: Path) -> None:
    src = tmp_path / "pkg" / "calc.py"
    src.parent.mkdir()
    assert where_tests_go(src, "python", [tmp_path]) == tmp_path / "pkg" / "test_calc.py"
    (tmp_path / "tests").mkdir()
    assert where_tests_go(src, "python", [tmp_path]) == tmp_path / "tests" / "test_calc.py"
    assert where_tests_go(tmp_path / "a.ts", "typescript", [tmp_path]).name == "a.test.ts"
    assert where_tests_go(tmp_path / "a.go", "go", [tmp_path]).name == "a_test.go"
    assert where_tests_go(tmp_path / "lib.rs", "rust", [tmp_path]) == tmp_path / "lib.rs"


def test_fix_questions_include_the_editor_diagnostics() -> None:
    text = question(ACTIONS["fix"], "x = 1/0", "python", "a.py", ["division by zero"])
    assert "division by zero" in text and "```python\nx = 1/0\n```" in text
    assert "division by zero" not in question(ACTIONS["explain"], "x", "python", "a.py", ["division by zero"])


# -- repository context ----------------------------------------------------------------------------


def test_completions_get_the_definitions_used_near_the_cursor(tmp_path: Path) -> None:
    from lsp.work import WorkspaceIndex, describe_definition

    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    editor_text = "from calc import add\n\n\ndef total(xs):\n    s = 0\n    for x in xs:\n        s = add(s, x)\n    "
    told: list[str] = []
    index = WorkspaceIndex(tmp_path.resolve(), told.append)
    assert index.definitions_near(tmp_path / "shapes.py", 6, editor_text) == []  # not built yet: no waiting
    index.start()
    assert index.settled.wait(30) and index.ready.is_set() and told == []
    near = [describe_definition(d) for d in index.definitions_near(tmp_path / "shapes.py", 7, editor_text)]
    assert "calc.py:1: def add(a, b):" in near
    assert index.definitions_near(tmp_path.parent / "elsewhere.py", 7, editor_text) == []  # outside the root
    found = index.enclosing_definition(tmp_path / "shapes.py", 6, 8, editor_text)
    assert found is not None and found.name == "total"
    index.shutdown()


# -- completions through the session, on a scripted engine ---------------------------------------------


def test_fill_in_the_middle_goes_through_the_sessions_raw_path() -> None:
    """A FIM prompt reaches the engine as it is (no template, no gate) and stops at the cut."""
    import threading

    from scripted import ScriptedEngine

    from lsp.generate import complete, completion_sampling

    engine = ScriptedEngine(["x", " * 2", "\n", "\n", "def g():", "\n    pass"], fim_tokens=("<PRE>", "<SUF>", "<MID>"))
    settings = Settings(system_prompt="never part of a FIM prompt")
    context = CursorContext(
        "def f(x):\n    return ", "\n\nprint(f(1))\n", "python", "pkg/mod.py", ["calc.py:1: def add(a, b)"]
    )
    text = complete(engine, settings, context, completion_sampling(settings, 64), threading.Event())
    assert text == "x * 2"
    assert engine.prompts == [fim_prompt(context, ("<PRE>", "<SUF>", "<MID>"), "#")]
    assert engine.pieces == ["def g():", "\n    pass"]  # the blank line ended the stream there


def test_chat_prompt_completion_uses_the_completion_system_prompt_and_sampling() -> None:
    import threading

    from scripted import ScriptedEngine

    from lsp.completion import COMPLETION_SYSTEM
    from lsp.generate import complete, completion_sampling

    engine = ScriptedEngine(["```python\n", "x * 2", " + 1", " + 2"])
    settings = Settings(system_prompt="the configured one")
    context = ctx("def f(x):\n    return ", "\n")
    assert complete(engine, settings, context, completion_sampling(settings, 3), threading.Event()) == "x * 2 + 1"
    assert COMPLETION_SYSTEM in engine.prompts[0] and "the configured one" not in engine.prompts[0]
    assert engine.pieces == [" + 2"]  # max_tokens 3: the completion's sampling, not the configured one
