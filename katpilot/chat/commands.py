"""Slash commands of the chat: each one a small function on the app."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from katpilot.errors import KatpilotError

if TYPE_CHECKING:
    from katpilot.chat.app import ChatApp
    from katpilot.index import RepoIndex

ATTACH_MAP_TOKENS = 1024


def run_command(app: ChatApp, line: str) -> None:
    name, _, arg = line[1:].partition(" ")
    arg = arg.strip()
    handler = COMMANDS.get(name)
    if handler is None:
        raise KatpilotError(f"unknown command /{name}", "type /help for the list")
    handler(app, arg)


def _think(app: ChatApp, arg: str) -> None:
    app.controls = app.controls.updated(think=arg)
    app.notice(f"think {arg}")


def _budget(app: ChatApp, arg: str) -> None:
    budget = None if arg in ("none", "off", "") else (int(arg) if arg.lstrip("-").isdigit() else arg)
    app.controls = app.controls.updated(budget=budget)
    app.notice(f"thinking budget {arg} tokens" if budget is not None else "no thinking budget")


def _threshold(app: ChatApp, arg: str) -> None:
    app.controls = app.controls.updated(threshold=arg)
    app.notice(f"think when p(on) >= {app.controls.threshold:g}")


def _model(app: ChatApp, arg: str) -> None:
    if not arg:
        raise KatpilotError(
            "/model needs a model: a name `katpilot models` lists, a GGUF path or an alias",
            "e.g. /model qwen2.5-coder:1.5b",
        )
    if app.generating:
        raise KatpilotError("cannot switch models while answering", "press Esc first")
    app.notice(f"loading {arg} …")
    app.load_model(replace(app.settings, model=arg))


def _index(app: ChatApp) -> RepoIndex:
    from katpilot.index import RepoIndex

    index = RepoIndex(app.workspace)
    index.refresh()
    return index


def _add(app: ChatApp, arg: str) -> None:
    if not arg:
        raise KatpilotError("/add needs a file of the workspace", "e.g. /add src/main.py")
    with _index(app) as index:
        document = index.read_text(Path(arg).expanduser())
    app.attachments.append(f"File {document.path}:\n```\n{document.text.rstrip()}\n```")
    withheld = f" ({document.withheld_lines} secret-looking line(s) withheld)" if document.withheld_lines else ""
    app.notice(f"attached {document.path}{withheld}; it goes with your next question")


def _map(app: ChatApp, arg: str) -> None:
    counter = app.session.engine.count_tokens if app.session is not None else None
    with _index(app) as index:
        text = index.repo_map(ATTACH_MAP_TOKENS, count_tokens=counter)
    app.attachments.append(f"Repository map of {app.workspace.name}:\n```\n{text.rstrip()}\n```")
    app.notice(f"attached the repo map ({text.count(chr(10))} lines); it goes with your next question")


def _export(app: ChatApp, arg: str) -> None:
    if app.history is None or app.chat_id is None:
        raise KatpilotError("nothing to export yet", "ask something first")
    target = Path(arg).expanduser() if arg else Path.cwd() / f"katpilot-chat-{app.chat_id}.md"
    try:
        target.write_text(app.history.export_markdown(app.chat_id), encoding="utf-8")
    except OSError as exc:
        raise KatpilotError(f"cannot write {target} ({exc.strerror})", "give a writable path: /export FILE") from None
    app.notice(f"exported to {target}")


def _clear(app: ChatApp, arg: str) -> None:
    if app.generating:
        raise KatpilotError("cannot clear while answering", "press Esc first")
    app.query_one("#log").remove_children()
    app.chat_id = None
    app.attachments = []
    if app.session is not None:
        app.session.clear()
    app.notice("new chat")


def _history(app: ChatApp, arg: str) -> None:
    if app.history is None:
        raise KatpilotError("the history is not available", "see the error above")
    chats = app.history.chats(20)
    lines = [f"{c.id:>4}  {c.messages:>3} msgs  {c.title or '(untitled)'}" for c in chats] or ["no chats yet"]
    app.notice("\n".join(lines) + "\n(resume one with katpilot chat --resume ID)")


def _help(app: ChatApp, arg: str) -> None:
    from katpilot.chat.app import HELP

    app.notice(HELP)


COMMANDS = {
    "think": _think,
    "budget": _budget,
    "threshold": _threshold,
    "model": _model,
    "add": _add,
    "map": _map,
    "export": _export,
    "clear": _clear,
    "history": _history,
    "help": _help,
}
