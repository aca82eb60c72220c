"""The chat as people see it: SVG snapshots of the main screen, and the real program in a real
terminal (tmux) on the embedded model, including a SIGKILL in the middle of an answer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from katpilot.chat.app import ChatApp
from katpilot.chat.widgets import AssistantMessage, PromptInput
from katpilot.config import load_settings
from katpilot.history import History

pytestmark = pytest.mark.timeout(240)


def _history_with_two_answers(path: Path) -> int:
    with History(path) as h:
        chat = h.new_chat("smollm2-135m")
        h.add_message(chat, "user", "Is this function thread-safe?")
        h.add_message(
            chat,
            "assistant",
            "No: `counter += 1` is a read-modify-write, so two threads can lose an update.\n\n"
            "```python\nwith lock:\n    counter += 1\n```",
            judge="Concurrency questions need a careful look.",
            think="The increment is not atomic in CPython bytecode...",
            mode="on",
            decided_by="model",
            p_on=0.82,
        )
        h.add_message(chat, "user", "What does len() return?")
        h.add_message(
            chat,
            "assistant",
            "The number of items in a container.",
            judge="A simple fact.",
            mode="off",
            decided_by="model",
            p_on=0.07,
        )
        return chat


def test_main_screen_snapshot(snap_compare, tmp_path: Path) -> None:
    chat = _history_with_two_answers(tmp_path / "history.sqlite")
    settings = load_settings({"think": "auto"}).settings
    app = ChatApp(settings, workspace=tmp_path, history_path=tmp_path / "history.sqlite", resume=chat)

    async def expand_thinking(pilot) -> None:
        while app.session is None:
            await pilot.pause(0.05)
        first = app.query(AssistantMessage).first()
        first.panel.collapsed = False
        app.query_one(PromptInput).cursor_blink = False  # a blinking cursor made the picture flaky
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(100, 34), run_before=expand_thinking)


# -- the real program in tmux ---------------------------------------------------------------------

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


class Tmux:
    """One detached tmux session running a command, on its own tmux server (socket), so tests
    running side by side never share, or shut down, each other's server."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.name = f"katpilot-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        self._tmux(
            "new-session", "-d", "-s", self.name, "-x", "120", "-y", "40", f"env {exports} {command}", check=True
        )

    def _tmux(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True, check=check)

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys, check=True)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name).stdout

    def pane_pid(self) -> int:
        return int(self._tmux("display-message", "-p", "-t", self.name, "#{pane_pid}").stdout.strip())

    def close(self) -> None:
        self._tmux("kill-server")


def _wait_for(condition, timeout: float = 90.0, what: str = "", screen=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f"; the screen:\n{screen()}" if screen else ""
        )
        time.sleep(0.2)


@pytest.fixture()
def terminal(tmp_path: Path):
    env = {
        "KATPILOT_HOME": str(tmp_path),
        "KATPILOT_MAX_TOKENS": "48",
        "KATPILOT_TEMPERATURE": "0",
        "TERM": "xterm-256color",
    }
    session = Tmux(f"{sys.executable} -m katpilot chat --think off --workspace {tmp_path}", env)
    yield session, tmp_path / "data" / "history.sqlite"
    session.close()


def _messages(db: Path) -> list[tuple[str, str, bool]]:
    if not db.exists():
        return []
    with History(db) as h:
        chats = h.chats()
        return [(m.role, m.content, m.partial) for c in chats for m in h.messages(c.id)]


@needs_tmux
def test_an_answer_appears_in_a_real_terminal(terminal) -> None:
    tmux, db = terminal
    _wait_for(lambda: "SmolLM2" in tmux.screen() or "smollm" in tmux.screen().lower(), what="the model to load")
    tmux.send("What is the capital of France?", "Enter")
    _wait_for(lambda: sum(1 for role, _, _ in _messages(db) if role == "assistant") == 1, what="the answer")
    answer = next(content for role, content, _ in _messages(db) if role == "assistant")
    first_words = " ".join(answer.split()[:3])
    _wait_for(lambda: first_words in " ".join(tmux.screen().split()), timeout=10, what="the answer on screen")
    assert "THINK OFF" in tmux.screen()


@needs_tmux
def test_sigkill_mid_stream_keeps_every_completed_message(terminal) -> None:
    tmux, db = terminal
    _wait_for(lambda: "smollm" in tmux.screen().lower(), what="the model to load")
    tmux.send("Say hello", "Enter")
    _wait_for(lambda: len(_messages(db)) == 2, what="the first answer")
    completed = _messages(db)
    tmux.send("/budget none", "Enter")
    tmux.send("Write a very long story about a dragon and a knight", "Enter")
    _wait_for(lambda: len(_messages(db)) == 3, timeout=90, what="the second question to be saved", screen=tmux.screen)
    time.sleep(0.3)  # the answer is streaming now
    pids = subprocess.run(["pgrep", "-P", str(tmux.pane_pid())], capture_output=True, text=True).stdout.split()
    for pid in pids or [str(tmux.pane_pid())]:
        os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.5)
    after = _messages(db)
    assert after[:2] == completed
    assert after[2][:2] == ("user", "Write a very long story about a dragon and a knight")
