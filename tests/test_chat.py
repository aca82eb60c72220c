"""The chat app driven by Textual's pilot on the embedded model, with a real history database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual import events

from katpilot.chat.app import ChatApp
from katpilot.chat.widgets import AssistantMessage, NoticeLine
from katpilot.config import load_settings
from katpilot.history import History

pytestmark = pytest.mark.timeout(180)


def _app(tmp_path: Path, **flags: object) -> ChatApp:
    settings = load_settings({"max_tokens": 24, "temperature": 0.0, "n_ctx": 2048, **flags}).settings
    return ChatApp(settings, workspace=tmp_path, history_path=tmp_path / "history.sqlite")


async def _wait(pilot, condition, timeout: float = 60.0) -> None:
    waited = 0.0
    while not condition():
        await pilot.pause(0.05)
        waited += 0.05
        assert waited < timeout, "timed out waiting for the app"


async def _ask(app: ChatApp, pilot, question: str) -> AssistantMessage:
    await _wait(pilot, lambda: app.session is not None)
    await pilot.click("#prompt")
    for char in question:
        await pilot.press(char if char != " " else "space")
    await pilot.press("enter")
    await _wait(pilot, lambda: app.generating or app.responses)
    return app.query(AssistantMessage).last()


def test_ask_streams_an_answer_and_saves_it(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path, think="off")
        async with app.run_test() as pilot:
            message = await _ask(app, pilot, "Say hello")
            await _wait(pilot, lambda: bool(app.responses))
            response = app.responses[-1]
            assert response.answer and response.mode == "off" and response.decided_by == "user"
            await pilot.pause(0.2)
            assert message.answer.source.strip() == response.answer.strip()
            assert "THINK OFF · you" in str(message.badge.render())

    asyncio.run(run())
    with History(tmp_path / "history.sqlite") as h:
        (chat,) = h.chats()
        assert [m.role for m in h.messages(chat.id)] == ["user", "assistant"]


def test_think_mode_toggle_and_thinking_panel(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path)
        async with app.run_test() as pilot:
            assert app.controls.think == "auto"
            await pilot.press("ctrl+t")
            assert app.controls.think == "on"
            message = await _ask(app, pilot, "Why is the sky blue")
            await _wait(pilot, lambda: bool(app.responses))
            assert app.responses[-1].mode == "on" and message.thinking_text
            assert message.panel.collapsed
            await pilot.click(message.panel.query_one("CollapsibleTitle"))
            assert not message.panel.collapsed
            await pilot.press("ctrl+t", "ctrl+t")
            assert app.controls.think == "auto"

    asyncio.run(run())


def test_a_plain_model_decides_nothing_and_saves_nothing(tmp_path: Path) -> None:
    """Auto on the plain embedded model, then a forced think-on answer: no decision, no savings."""

    async def run() -> None:
        app = _app(tmp_path, max_tokens=12)
        async with app.run_test() as pilot:
            message = await _ask(app, pilot, "What is 2+2")
            await _wait(pilot, lambda: len(app.responses) == 1)
            assert (app.responses[0].mode, app.responses[0].decided_by) == ("off", "none")
            await pilot.pause(0.2)
            assert "THINK OFF · no decision" in str(message.badge.render())
            await pilot.press("ctrl+t")  # think on, forced
            await _ask(app, pilot, "Why is the sky blue")
            await _wait(pilot, lambda: len(app.responses) == 2)
            assert app.responses[1].mode == "on" and app.responses[1].stats.think_tokens > 0
            assert app.saved_tokens == 0 and "AutoThink saved ~0 tokens" in str(app.query_one("#status").render())

    asyncio.run(run())
    with History(tmp_path / "history.sqlite") as h:
        (chat,) = h.chats()
        assert [m.decided_by for m in h.messages(chat.id) if m.role == "assistant"] == ["none", "user"]


def test_escape_stops_and_keeps_the_partial_answer(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path, think="off", max_tokens=400)
        async with app.run_test() as pilot:
            await _ask(app, pilot, "Write a long story about a dragon")
            await _wait(pilot, lambda: app.responses or (app._current is not None and app._current.answer.source))
            await pilot.press("escape")
            await _wait(pilot, lambda: bool(app.responses))
            response = app.responses[-1]
            assert response.stats.finish_reason == "cancelled"
            assert response.stats.completion_tokens < 400

    asyncio.run(run())
    with History(tmp_path / "history.sqlite") as h:
        (chat,) = h.chats()
        assert h.messages(chat.id)[-1].partial


def test_resume_a_chat_from_the_history(tmp_path: Path) -> None:
    with History(tmp_path / "history.sqlite") as h:
        chat = h.new_chat("smollm2-135m")
        h.add_message(chat, "user", "What is 2+2?")
        h.add_message(chat, "assistant", "It is 4.", mode="off", decided_by="model", p_on=0.1)
        h.add_message(chat, "user", "Why is the sky blue?")
        h.add_message(
            chat,
            "assistant",
            "Rayleigh scattering.",
            mode="on",
            decided_by="model",
            p_on=0.9,
            stats={"think_tokens": 120},
        )
        h.add_message(chat, "user", "Hello")
        h.add_message(chat, "assistant", "Hi.", mode="off", decided_by="none")  # a plain model: nothing saved

    async def run() -> None:
        settings = load_settings({"max_tokens": 8, "think": "off"}).settings
        app = ChatApp(settings, workspace=tmp_path, history_path=tmp_path / "history.sqlite", resume=chat)
        async with app.run_test() as pilot:
            await _wait(pilot, lambda: app.session is not None)
            first, _second, third = app.query(AssistantMessage)
            assert first.answer.source == "It is 4."
            assert "THINK OFF · no decision" in str(third.badge.render())
            assert [m.content for m in app.session.history] == [
                "What is 2+2?",
                "It is 4.",
                "Why is the sky blue?",
                "Rayleigh scattering.",
                "Hello",
                "Hi.",
            ]
            # The resumed answers count too: one think-off answer saved a mean think of 120 tokens.
            assert app.saved_tokens == 120 and "AutoThink saved ~120 tokens" in str(app.query_one("#status").render())

    asyncio.run(run())


def test_slash_commands(tmp_path: Path) -> None:
    (tmp_path / "tool.py").write_text('TOKEN = "ghp_' + "a" * 36 + '"\n\ndef helper():\n    return 1\n')

    async def run() -> None:
        app = _app(tmp_path)
        async with app.run_test() as pilot:
            for command in (
                "/think off",
                "/budget 64",
                "/threshold 0.3",
                "/add tool.py",
                "/add ../elsewhere.py",
                "/nope",
            ):
                app.run_command(command)
            await pilot.pause(0.1)
            assert (app.controls.think, app.controls.budget, app.controls.threshold) == ("off", 64, 0.3)
            assert len(app.attachments) == 1 and "def helper" in app.attachments[0] and "ghp_" not in app.attachments[0]
            notices = [str(n.render()) for n in app.query(NoticeLine)]
            assert any("outside the workspace" in n for n in notices)
            assert any("unknown command /nope" in n for n in notices)

    asyncio.run(run())


def test_keys_typed_ahead_stay_in_order(tmp_path: Path) -> None:
    """A terminal delivers keys as fast as they come (typed ahead, or sent by tmux): the line is
    submitted at its Enter, not when the Enter has gone round the app, after the next keys."""

    async def run() -> None:
        app = _app(tmp_path, model=str(tmp_path / "no-model-needed.gguf"))
        async with app.run_test() as pilot:
            for key in [*"/budget 5", "enter", *"/budget 7", "enter"]:
                character = {"enter": "\r"}.get(key, key)
                name = {" ": "space", "/": "slash", "enter": "enter"}.get(key, key)
                app.post_message(events.Key(name, character))  # as the terminal driver does: all queued at once
            await _wait(pilot, lambda: app.controls.budget == 7, timeout=10)
            assert not any("must be" in str(n.render()) for n in app.query(NoticeLine))

    asyncio.run(run())


def test_errors_show_inline(tmp_path: Path) -> None:
    (tmp_path / "history.sqlite").write_bytes(b"not a database at all" * 100)

    async def run() -> None:
        settings = load_settings({"model": str(tmp_path / "missing.gguf")}).settings
        app = ChatApp(settings, workspace=tmp_path, history_path=tmp_path / "history.sqlite")
        async with app.run_test() as pilot:
            await _wait(pilot, lambda: len(app.query(NoticeLine)) >= 2)
            notices = [str(n.render()) for n in app.query(NoticeLine)]
            assert any("moved it to" in n for n in notices)  # the corrupt history, set aside
            assert any("missing.gguf" in n and "error" in n for n in notices)  # the missing model
            app.run_command("/think maybe")
            await pilot.pause(0.1)
            assert "think must be one of 'auto', 'on', 'off'" in str(app.query(NoticeLine).last().render())
            app.run_command("/budget 0")  # the config file's rule, as for --budget and KATPILOT_BUDGET
            await pilot.pause(0.1)
            assert "budget = 0 is out of range (must be >= 1)" in str(app.query(NoticeLine).last().render())

    asyncio.run(run())
    assert list(tmp_path.glob("history.sqlite.unreadable-*"))
