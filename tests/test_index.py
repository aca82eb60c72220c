"""The repository index on small fixture repositories: real tree-sitter, real SQLite, real files."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import pytest
from index_fixtures import LANGUAGE_REPO, PLANTED_AWS, PLANTED_KEY, PYTHON_NESTING, SECRET_REPO, write_repo

from katpilot.errors import KatpilotError
from katpilot.index import RepoIndex, RepoIndexError, build, parse
from katpilot.index.lexical import count_words, unpack
from katpilot.index.secrets import WITHHELD_MARKER, redact
from katpilot.terms import estimate_tokens


@pytest.fixture()
def lang_index(tmp_path: Path):
    write_repo(tmp_path / "repo", LANGUAGE_REPO)
    with RepoIndex(tmp_path / "repo", cache_path=tmp_path / "cache.sqlite") as index:
        index.refresh()
        yield index


def _defs(index: RepoIndex, path: str) -> dict[str, tuple[str, str, int, int]]:
    """name -> (kind, parent, first line, last line), lines 1-based as an editor shows them."""
    return {d.name: (d.kind, d.parent, d.start[0] + 1, d.end[0] + 1) for d in index.definitions(path=path)}


# -- definitions and ranges, per language -------------------------------------------------------


def test_python_definitions(lang_index: RepoIndex) -> None:
    defs = _defs(lang_index, "py/shapes.py")
    assert defs["Circle"] == ("class", "", 4, 11)
    assert defs["area"] == ("method", "Circle", 10, 11)
    assert defs["total_area"] == ("function", "", 14, 16)
    (circle,) = lang_index.definitions(name="Circle")
    assert circle.doc == "A circle of a given radius."
    (total,) = lang_index.definitions(name="total_area")
    assert total.signature == "def total_area(shapes: list) -> float:"


def test_javascript_definitions(lang_index: RepoIndex) -> None:
    defs = _defs(lang_index, "js/cart.js")
    assert defs["Cart"] == ("class", "", 2, 7)
    assert defs["addItem"] == ("method", "Cart", 4, 6)
    assert defs["cartTotal"] == ("function", "", 10, 12)
    assert defs["formatPrice"][0] == "function"
    (total,) = lang_index.definitions(name="cartTotal")
    assert total.doc == "Price of everything in the cart."


def test_typescript_definitions(lang_index: RepoIndex) -> None:
    defs = _defs(lang_index, "ts/store.ts")
    assert defs["Entity"][:3] == ("interface", "", 2)
    assert defs["UserId"][0] == "type"
    assert defs["UserStore"][:3] == ("class", "", 8)
    assert defs["saveUser"] == ("method", "UserStore", 11, 13)
    assert defs["Role"][0] == "enum"
    assert lang_index.definitions(name="Entity")[0].doc == "Something with an id."


def test_go_definitions(lang_index: RepoIndex) -> None:
    defs = _defs(lang_index, "go/server.go")
    assert defs["Server"][:2] == ("struct", "")
    assert defs["Handler"][:2] == ("interface", "")
    assert defs["Start"] == ("method", "Server", 14, 16)
    assert defs["NewServer"] == ("function", "", 18, 20)
    assert lang_index.definitions(name="Start")[0].doc == "Start listens on the port."


def test_rust_definitions(lang_index: RepoIndex) -> None:
    defs = _defs(lang_index, "rs/stack.rs")
    assert defs["Stack"][:3] == ("struct", "", 3)
    assert defs["push_item"] == ("method", "Stack", 9, 11)
    assert defs["Describe"][0] == "trait"
    assert defs["Shape"][0] == "enum"
    (stack,) = lang_index.definitions(name="Stack")
    assert stack.doc == "A last-in first-out stack."  # the comment above the #[derive]


def test_java_definitions(lang_index: RepoIndex) -> None:
    defs = _defs(lang_index, "java/Account.java")
    assert defs["Account"][0] in ("class", "method")  # class and its constructor share the name
    assert defs["deposit"] == ("method", "Account", 10, 12)
    assert defs["Auditable"][0] == "interface"
    kinds = sorted(d.kind for d in lang_index.definitions(name="Account"))
    assert kinds == ["class", "method"]


def test_c_definitions(lang_index: RepoIndex) -> None:
    header = _defs(lang_index, "c/vec.h")
    assert header["vec"][:2] == ("struct", "")
    assert header["vec_t"][0] == "type"
    assert header["VEC_EMPTY"][0] == "macro"
    source = _defs(lang_index, "c/vec.c")
    assert source["vec_push"] == ("function", "", 4, 8)
    assert source["vec_sum"] == ("function", "", 10, 15)
    pushes = {d.path: d for d in lang_index.definitions(name="vec_push")}
    assert set(pushes) == {"c/vec.h", "c/vec.c"}  # prototype and definition
    assert pushes["c/vec.c"].doc == "Appends x; returns the new length."


def test_cpp_definitions(lang_index: RepoIndex) -> None:
    header = {(d.name, d.kind, d.parent, d.start[0] + 1) for d in lang_index.definitions(path="cpp/matrix.hpp")}
    assert {
        ("Matrix", "class", "linalg", 5),
        ("Matrix", "method", "Matrix", 7),
        ("trace", "method", "Matrix", 8),
    } <= header
    source = {(d.name, d.kind, d.parent) for d in lang_index.definitions(path="cpp/matrix.cpp")}
    assert ("trace", "method", "Matrix") in source
    assert ("clamp_value", "function", "linalg") in source
    assert ("use_matrix", "function", "") in source


def test_python_walk_finds_what_the_query_finds() -> None:
    source = PYTHON_NESTING.encode()
    tree = parse.parse_tree("python", source)
    assert not tree.root_node.has_error  # else the query would be used anyway
    walked = parse.definition_rows("python", source, tree)
    queried = parse._queried_rows("python", source, tree.root_node)
    assert walked == queried
    names = {row[0] for row in walked}
    assert {"in_case", "in_except_group", "in_while_else", "InFunction", "prop", "continued", "spaced"} <= names
    assert "not_a_definition" not in names
    rows = {row[0]: row for row in walked}
    assert rows["method"][1:3] == ("method", "InFunction")
    assert rows["in_if"][1:3] == ("method", "Outer")
    assert rows["decorated"][8] == "Decorated."
    assert rows["Outer"][8] == "Raw docstring."
    assert rows["continued"][7] == "def \\ continued(a, b): # a signature over lines"


# -- references and lookups ----------------------------------------------------------------------


def test_word_counts_are_those_of_the_identifier_pattern() -> None:
    text = "x1 = 0x1F + 42 * _y2; é_name αβ snake_case9 __dunder__\n# comment x1 x1 1e10\n"
    expected = Counter(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    assert unpack(*count_words(text.encode())) == expected
    assert unpack(*count_words(b"")) == {}


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("total_area", "py/app.py"),
        ("cartTotal", "js/checkout.js"),
        ("saveUser", "ts/main.ts"),
        ("NewServer", "go/main.go"),
        ("push_item", "rs/main.rs"),
        ("deposit", "java/Bank.java"),
        ("vec_push", "c/vec.c"),
        ("trace", "cpp/matrix.cpp"),
    ],
)
def test_references_across_files(lang_index: RepoIndex, name: str, user: str) -> None:
    assert lang_index.references(name).get(user, 0) >= 1


@pytest.mark.parametrize(
    ("path", "line", "expected"),
    [
        ("py/shapes.py", 11, "area"),
        ("py/shapes.py", 5, "Circle"),
        ("js/cart.js", 5, "addItem"),
        ("ts/store.ts", 12, "saveUser"),
        ("go/server.go", 15, "Start"),
        ("rs/stack.rs", 10, "push_item"),
        ("java/Account.java", 11, "deposit"),
        ("c/vec.c", 12, "vec_sum"),
        ("cpp/matrix.cpp", 8, "trace"),
    ],
)
def test_enclosing_definition(lang_index: RepoIndex, path: str, line: int, expected: str) -> None:
    found = lang_index.enclosing_definition(path, line - 1, 4)
    assert found is not None and found.name == expected


def test_enclosing_definition_outside_any_is_none(lang_index: RepoIndex) -> None:
    assert lang_index.enclosing_definition("py/shapes.py", 0, 0) is None


def test_enclosing_definition_of_unsaved_text(lang_index: RepoIndex) -> None:
    edited = "def brand_new():\n    x = 1\n    return x\n"
    found = lang_index.enclosing_definition("py/app.py", 1, 4, text=edited)
    assert found is not None and found.name == "brand_new"


@pytest.mark.parametrize(
    ("path", "line", "wanted"),
    [
        ("py/app.py", 5, {"Circle", "total_area"}),
        ("js/checkout.js", 5, {"Cart", "cartTotal", "formatPrice", "addItem"}),
        ("go/main.go", 4, {"NewServer", "Start"}),
        ("java/Bank.java", 3, {"Account", "deposit"}),
        ("cpp/matrix.cpp", 19, {"Matrix", "trace"}),
    ],
)
def test_definitions_near_a_position(lang_index: RepoIndex, path: str, line: int, wanted: set[str]) -> None:
    near = {d.name for d in lang_index.definitions_near(path, line - 1, limit=20)}
    assert wanted <= near


def test_search_finds_definitions_by_words(lang_index: RepoIndex) -> None:
    hits = lang_index.search("what is the total area of the shapes", limit=3)
    assert hits[0].definition.name == "total_area"
    assert "return sum(s.area() for s in shapes)" in hits[0].text
    assert lang_index.search("deposit money into an account")[0].definition.name == "deposit"


def test_repo_map_fits_budget_and_follows_focus(lang_index: RepoIndex) -> None:
    for budget in (40, 120, 400):
        text = lang_index.repo_map(budget)
        assert text and estimate_tokens(text) <= budget
    focused = lang_index.repo_map(60, focus_files=["py/app.py"])
    assert "total_area" in focused and "Circle" in focused
    assert lang_index.repo_map(0) == ""


def test_focus_values_resolve_to_files_and_names(
    lang_index: RepoIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lang_index.root
    monkeypatch.chdir(tmp_path)  # a relative path is tried from here first, then from the root
    files, names = lang_index.resolve_focus(["py/app.py", str(root / "py/shapes.py"), "total_area"])
    assert files == [str(root / "py/app.py"), str(root / "py/shapes.py")] and names == ["total_area"]
    assert lang_index.resolve_focus([]) == ([], [])
    with pytest.raises(RepoIndexError, match="--focus no_such_thing is neither a file nor a defined name"):
        lang_index.resolve_focus(["no_such_thing"])


def test_index_errors_are_named_for_the_index(lang_index: RepoIndex) -> None:
    """Not `IndexError_`, which read as Python's IndexError; still a KatpilotError for front ends."""
    assert issubclass(RepoIndexError, KatpilotError) and not issubclass(RepoIndexError, IndexError)
    with pytest.raises(RepoIndexError, match="outside the workspace"):
        lang_index.relative("/")


def test_repo_map_with_the_model_tokenizer(lang_index: RepoIndex, engine) -> None:
    text = lang_index.repo_map(100, count_tokens=engine.count_tokens)
    assert 0 < engine.count_tokens(text) <= 100


def test_paths_outside_the_workspace_are_refused(lang_index: RepoIndex, tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("x = 1\n")
    for bad in ("../outside.py", str(tmp_path / "outside.py")):
        with pytest.raises(KatpilotError, match="outside the workspace"):
            lang_index.read_text(bad)


# -- walking: ignore rules, vendored, binary, generated, size ------------------------------------


def test_ignore_rules(tmp_path: Path) -> None:
    root = write_repo(
        tmp_path / "repo",
        {
            ".gitignore": "*.gen.py\nbuild_out/\nlogs/*.py\n!logs/keep.py\n",
            "kept.py": "def kept(): pass\n",
            "x.gen.py": "def generated_by_rule(): pass\n",
            "build_out/a.py": "def in_ignored_dir(): pass\n",
            "logs/drop.py": "def dropped_log(): pass\n",
            "logs/keep.py": "def kept_log(): pass\n",
            "sub/.gitignore": "local_*.py\n",
            "sub/local_x.py": "def nested_ignored(): pass\n",
            "sub/other.py": "def nested_kept(): pass\n",
            ".katpilotignore": "secret_sauce/\n",
            "secret_sauce/s.py": "def katpilot_ignored(): pass\n",
            "node_modules/lib/index.js": "function vendored() {}\n",
            "big.py": "x = 1\n" * 300_000,
            "blob.py": "def x(): pass\n\0\0binary",
            "made.py": "# @generated by protoc\ndef generated_header(): pass\n",
            "notes.txt": "def not_code(): pass\n",
        },
    )
    with RepoIndex(root, cache_path=tmp_path / "c.sqlite") as index:
        report = index.refresh()
        names = {d.name for d in index.definitions()}
    assert names == {"kept", "kept_log", "nested_kept"}
    assert report.skipped["ignored"] >= 4
    assert report.skipped["vendored or build directory"] == 1
    assert report.skipped["over the size limit"] == 1
    assert report.skipped["binary"] == 1
    assert report.skipped["generated"] == 1


# -- secrets -------------------------------------------------------------------------------------


def _everything_the_index_returns(index: RepoIndex) -> str:
    parts = [index.repo_map(4000)]
    parts += [h.text for q in ("openai api key settings", "embedded key", "deploy aws") for h in index.search(q, 10)]
    parts += [repr(d) for d in index.definitions()]
    parts += [doc.text for doc in index.documents()]
    for path in ("config.py", "deploy.go", "keys.rs"):
        for row in range(8):
            parts.append(repr(index.enclosing_definition(path, row, 4)))
            parts += [repr(d) for d in index.definitions_near(path, row)]
        parts.append(index.read_text(path).text)
    parts.append(json.dumps(index.references("OPENAI_API_KEY")))
    return "\n".join(parts)


def test_planted_secrets_never_come_out(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", SECRET_REPO)
    with RepoIndex(root, cache_path=tmp_path / "c.sqlite") as index:
        report = index.refresh()
        out = _everything_the_index_returns(index)
        for needle in (PLANTED_KEY, PLANTED_AWS, "PLANTEDopenssh", "plantedPRIVATE", "BEGIN RSA PRIVATE"):
            assert needle not in out
        assert WITHHELD_MARKER in index.read_text("config.py").text
        assert "def client_settings" in out  # the rest of the file is still there
        assert report.withheld_files == 2  # .env and id_rsa, never opened
        assert report.withheld_lines == 5  # the assignment, the comment, the three key lines
        for credential in (".env", "id_rsa"):
            with pytest.raises(KatpilotError, match="credential file"):
                index.read_text(credential)
    wal = Path(f"{tmp_path / 'c.sqlite'}-wal")
    cache = (tmp_path / "c.sqlite").read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert PLANTED_KEY.encode() not in cache and PLANTED_AWS.encode() not in cache


def test_secrets_in_unsaved_editor_text_are_withheld(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", SECRET_REPO)
    with RepoIndex(root, cache_path=tmp_path / "c.sqlite") as index:
        text = f'def f():\n    token = "{PLANTED_KEY}"\n    return client_settings()\n'
        near = index.definitions_near("uses.py", 1, text=text)
        assert [d.name for d in near] == ["client_settings"]
        assert PLANTED_KEY not in repr(index.enclosing_definition("uses.py", 1, 4, text=text))


@pytest.mark.parametrize(
    "line",
    [
        'aws = "AKIAIOSFODNN7EXAMPLE"',
        "gh = 'ghp_" + "a" * 36 + "'",
        'password: "correct-horse-battery"',
        "url = 'postgres://admin:s3cretpass@db:5432/x'",
        'slack = "xoxb-1234567890-abcdefghij"',
        "jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV'",
        "$db = ['password' => 'hunter2hunter2'];",
        'apiKey := "abcdefgh12345"',
        'DB_PASSWORD = "hunter2hunter2"',
        'headers = {"X-Auth-Token": "abcdefghij123"}',
    ],
)
def test_secret_line_patterns(line: str) -> None:
    redacted, count = redact(f"x = 1\n{line}\ny = 2\n")
    assert count == 1 and redacted == f"x = 1\n{WITHHELD_MARKER}\ny = 2\n"
    assert redact(f"  {line}\n", "#") == (f"  # {WITHHELD_MARKER}\n", 1)


@pytest.mark.parametrize(
    "line", ["token = next_token()", 'name = "not a secret at all"', "password = input()", 'key = "short"']
)
def test_ordinary_lines_are_kept(line: str) -> None:
    assert redact(line + "\n") == (line + "\n", 0)


# -- the cache -----------------------------------------------------------------------------------


def test_only_changed_files_are_reparsed(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", LANGUAGE_REPO)
    cache = tmp_path / "c.sqlite"
    with RepoIndex(root, cache_path=cache) as index:
        first = index.refresh()
    assert first.parsed == len(LANGUAGE_REPO)

    with RepoIndex(root, cache_path=cache) as index:  # a new process would see the same cache
        again = index.refresh()
        assert (again.parsed, again.unchanged) == (0, len(LANGUAGE_REPO))

        shapes = root / "py/shapes.py"
        shapes.write_text(shapes.read_text() + "\n\ndef perimeter(c):\n    return 2 * 3.14159 * c.radius\n")
        app = root / "py/app.py"
        os.utime(app, ns=(app.stat().st_atime_ns, app.stat().st_mtime_ns + 10**9))  # touched, same content
        (root / "go/main.go").unlink()
        (root / "go/extra.go").write_text("package server\n\nfunc Extra() {}\n")
        changed = index.refresh()
        assert (changed.parsed, changed.removed) == (2, 1)  # shapes.py and extra.go; main.go gone
        assert changed.unchanged == len(LANGUAGE_REPO) - 2
        assert index.definitions(name="perimeter") and index.definitions(name="Extra")
        assert index.definitions(path="go/main.go") == []
        assert index.refresh().parsed == 0


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "foreign", "other-root", "old-version"],
)
def test_a_bad_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    root = write_repo(tmp_path / "repo", LANGUAGE_REPO)
    cache = tmp_path / "c.sqlite"
    with RepoIndex(root, cache_path=cache) as index:
        index.refresh()
    if damage == "garbage":
        cache.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:1500])
    elif damage == "foreign":
        cache.unlink()
        with sqlite3.connect(cache) as db:
            db.execute("CREATE TABLE users (id INTEGER)")
    else:
        with sqlite3.connect(cache) as db:
            key, value = ("root", "/elsewhere") if damage == "other-root" else ("version", "0")
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    with RepoIndex(root, cache_path=cache) as index:
        report = index.refresh()
    assert report.notices and "index cache" in report.notices[0]
    assert report.parsed == len(LANGUAGE_REPO)


def test_an_unwritable_cache_is_one_clear_error(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"a.py": "def a(): pass\n"})
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(KatpilotError, match="cannot write the index cache"):
        RepoIndex(root, cache_path=blocker / "index.sqlite")


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_parallel_and_serial_indexing_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str) -> None:
    root = write_repo(tmp_path / "repo", LANGUAGE_REPO)
    with RepoIndex(root, cache_path=tmp_path / "serial.sqlite") as index:
        index.refresh()
        serial = index.definitions()
    monkeypatch.setattr(build, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(build, "worker_count", lambda: 2)
    monkeypatch.setattr(build, "start_method", lambda: start)
    handovers = tmp_path / "tmp"
    handovers.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(handovers))
    with RepoIndex(root, cache_path=tmp_path / "parallel.sqlite") as index:
        report = index.refresh()
        assert report.parsed == len(LANGUAGE_REPO)
        assert index.definitions() == serial
    assert list(handovers.iterdir()) == []  # the workers' record files are gone


def _disk_full(*args: object, **kwargs: object) -> object:
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failing", ["worker handover", "handover directory"])
def test_a_cold_build_without_room_for_handovers_is_done_by_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Workers hand records back in files: where those cannot be written (a full disk), nothing
    is lost, this process indexes what the workers could not."""
    root = write_repo(tmp_path / "repo", LANGUAGE_REPO)
    with RepoIndex(root, cache_path=tmp_path / "serial.sqlite") as index:
        index.refresh()
        serial = index.definitions()
    monkeypatch.setattr(build, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(build, "worker_count", lambda: 2)
    monkeypatch.setattr(build, "start_method", lambda: "fork")  # the forked worker sees the patch
    if failing == "worker handover":
        monkeypatch.setattr(build, "_worker_chunk", _disk_full)
    else:
        monkeypatch.setattr(tempfile, "mkdtemp", _disk_full)
    with RepoIndex(root, cache_path=tmp_path / "parallel.sqlite") as index:
        report = index.refresh()
        assert report.parsed == report.files == len(LANGUAGE_REPO)
        assert index.definitions() == serial


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="threads are counted in /proc (Linux); elsewhere workers are spawned"
)
def test_workers_are_forked_only_from_a_single_thread() -> None:
    """fork copies only the calling thread: with a model's threads running it could copy a lock
    held forever, so a process with more than one thread spawns its workers. Importing the
    index and the CLI starts no thread (numpy would: OpenBLAS's)."""
    program = (
        "import threading, time\n"
        "import katpilot.cli, katpilot.index.repo\n"
        "from katpilot.index.build import start_method\n"
        "print(start_method())\n"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "print(start_method())\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["fork", "spawn"], result.stderr


def test_workers_that_cannot_start_leave_the_work_to_this_process(tmp_path: Path) -> None:
    """A program run as `python -` has no main module for spawned workers to import (a thread
    makes it spawn them): they die at start, and the whole tree is still indexed, by the parent
    alone."""
    root = tmp_path / "repo"
    root.mkdir()
    for i in range(build.PARALLEL_MIN_FILES + 10):
        (root / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    program = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "from katpilot.index import RepoIndex\n"
        "from katpilot.index.build import start_method\n"
        f"index = RepoIndex({str(root)!r}, cache_path=__import__('pathlib').Path({str(tmp_path / 'c.sqlite')!r}))\n"
        "report = index.refresh()\n"
        "print(start_method(), report.parsed, len(index.definitions()))\n"
    )
    result = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    count = build.PARALLEL_MIN_FILES + 10
    assert result.stdout.split() == ["spawn", str(count), str(count)]


# -- the commands --------------------------------------------------------------------------------


def _katpilot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "katpilot", *args], capture_output=True, text=True, timeout=120)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_leaves_the_index_free_to_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`katpilot index` on a terminal draws a progress bar; rich would redraw it from a thread of
    its own, and a process with a second thread spawns its workers instead of forking them."""
    from katpilot import cli

    root = tmp_path / "repo"
    root.mkdir()
    for i in range(build.PARALLEL_MIN_FILES + 10):
        (root / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    monkeypatch.setenv("KATPILOT_HOME", str(tmp_path / "home"))
    threads_when_starting_workers: list[int] = []
    real_start_method = build.start_method

    def start_method() -> str:
        threads_when_starting_workers.append(threading.active_count())
        return real_start_method()

    monkeypatch.setattr(build, "start_method", start_method)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    before = threading.active_count()
    index, report = cli._refresh_index(root, None, show_progress=True)
    index.close()
    assert report.parsed == build.PARALLEL_MIN_FILES + 10
    assert "parsing" in terminal.getvalue()  # the bar was drawn ...
    assert threads_when_starting_workers == [before]  # ... by no thread of its own


def test_index_and_map_commands(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {**LANGUAGE_REPO, **SECRET_REPO})
    built = _katpilot("index", str(root), "--json")
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["parsed"] == report["files"] and report["withheld_files"] == 2
    again = _katpilot("index", str(root))
    assert again.returncode == 0 and "0 parsed" in again.stdout

    shown = _katpilot("map", str(root), "--tokens", "300", "--focus", str(root / "py/app.py"))
    assert shown.returncode == 0, shown.stderr
    assert "total_area" in shown.stdout and estimate_tokens(shown.stdout) <= 300
    assert PLANTED_KEY not in shown.stdout + _katpilot("map", str(root), "--tokens", "5000").stdout

    unknown = _katpilot("map", str(root), "--focus", "no_such_thing")
    assert (
        unknown.returncode == 2
        and unknown.stderr.count("\n") == 1
        and "neither a file nor a defined name" in unknown.stderr
    )

    missing = _katpilot("map", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "not a directory" in missing.stderr
