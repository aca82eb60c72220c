"""Chat history on real SQLite files: migrations, writes, bad files, a killed writer, the command."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from katpilot import history as history_mod
from katpilot.chat_template import Message
from katpilot.errors import KatpilotError
from katpilot.history import History


def test_a_blank_database_migrates_to_the_final_schema(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    History(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(history_mod.MIGRATIONS)
        assert db.execute("PRAGMA application_id").fetchone()[0] == history_mod.APPLICATION_ID
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    assert columns == [
        "id",
        "chat_id",
        "role",
        "content",
        "judge",
        "think",
        "mode",
        "decided_by",
        "p_on",
        "stats",
        "partial",
        "created_at",
    ]
    History(path).close()  # reopening applies nothing twice


def test_messages_round_trip(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        chat = h.new_chat("smollm2-135m")
        h.add_message(chat, "user", "What is  2+2?\nquick")
        h.add_message(
            chat,
            "assistant",
            "4",
            judge="simple",
            mode="off",
            decided_by="model",
            p_on=0.12,
            stats={"answer_tokens": 1},
        )
        h.add_message(chat, "user", "and 3+3?")
        h.add_message(chat, "assistant", "6 be", think="adding", mode="on", decided_by="user", partial=True)
        other = h.new_chat("other-model")
        (latest, older) = h.chats()
        assert (latest.id, older.id) == (other, chat)  # most recent first
        assert older.title == "What is 2+2? quick" and older.messages == 4 and latest.messages == 0
        stored = h.messages(chat)
        assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[1].p_on == 0.12 and stored[1].stats == {"answer_tokens": 1} and not stored[1].partial
        assert stored[3].partial and stored[3].think == "adding"
        assert h.conversation(chat)[1] == Message("assistant", "4")
        h.add_message(chat, "user", "again")
        assert h.last_chat_id() == chat
        markdown = h.export_markdown(chat)
        assert "## You" in markdown and "think off (model, p(on)=0.12)" in markdown and "stopped" in markdown
        assert "<details><summary>thinking</summary>" in markdown
        with pytest.raises(KatpilotError, match="no chat 999"):
            h.messages(999) or h.chat(999)


def test_resume_references_resolve_to_a_chat(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        with pytest.raises(KatpilotError, match="there is no chat to resume yet"):
            h.resolve_chat("last")
        first, second = h.new_chat("m"), h.new_chat("m")
        h.add_message(first, "user", "touched last")
        assert h.resolve_chat("last") == first  # the most recently used, not the newest
        assert h.resolve_chat(str(second)) == second
        with pytest.raises(KatpilotError, match="there is no chat 99"):
            h.resolve_chat("99")
        for bad in ("latest", "-1", "1.0", ""):
            with pytest.raises(KatpilotError, match="takes a chat ID or 'last'"):
                h.resolve_chat(bad)


def test_an_answer_nobody_decided_is_exported_as_such(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        chat = h.new_chat("smollm2-135m")
        h.add_message(chat, "user", "hi")
        h.add_message(chat, "assistant", "hello", mode="off", decided_by="none")
        markdown = h.export_markdown(chat)
    assert "## katpilot · think off (no decision)" in markdown and "(none" not in markdown


@pytest.mark.parametrize("kind", ["garbage", "foreign"])
def test_a_bad_database_is_moved_aside_and_a_new_one_started(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "h.sqlite"
    if kind == "garbage":
        path.write_bytes(b"definitely not sqlite" * 200)
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
            db.execute("INSERT INTO notes VALUES ('precious')")
    with History(path) as h:
        assert h.notices and "moved it to" in h.notices[0]
        chat = h.new_chat("m")
        h.add_message(chat, "user", "hi")
    (aside,) = tmp_path.glob("h.sqlite.unreadable-*")
    if kind == "foreign":  # nothing lost: the other program's data is still there
        with sqlite3.connect(aside) as db:
            assert db.execute("SELECT text FROM notes").fetchone() == ("precious",)


def test_a_newer_schema_is_refused_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    History(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(KatpilotError, match="newer katpilot"):
        History(path)


def test_a_killed_writer_loses_no_completed_message(tmp_path: Path) -> None:
    """SIGKILL right after the writes: every committed message is in the database."""
    path = tmp_path / "h.sqlite"
    script = textwrap.dedent(
        f"""
        import sys, time
        from katpilot.history import History
        h = History({str(path)!r})
        chat = h.new_chat("m")
        for i in range(25):
            h.add_message(chat, "user", f"question {{i}}")
            h.add_message(chat, "assistant", f"answer {{i}}")
        print("written", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with History(path) as h:
        (chat,) = h.chats()
        stored = h.messages(chat.id)
    assert len(stored) == 50 and stored[-1].content == "answer 24"


def test_history_command_lists_chats(tmp_path: Path) -> None:
    env = {**os.environ, "KATPILOT_HOME": str(tmp_path)}
    with History(tmp_path / "data" / "history.sqlite") as h:
        chat = h.new_chat("smollm2-135m")
        h.add_message(chat, "user", "How do I reverse a list?")
    shown = subprocess.run(
        [sys.executable, "-m", "katpilot", "history"], capture_output=True, text=True, env=env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "How do I reverse a list?" in shown.stdout and "smollm2-135m" in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "katpilot", "history", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert json.loads(as_json.stdout)[0]["messages"] == 1
    empty = subprocess.run(
        [sys.executable, "-m", "katpilot", "history"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KATPILOT_HOME": str(tmp_path / "fresh")},
    )
    assert empty.returncode == 0 and "no chats yet" in empty.stdout
