"""Work-done progress of one question or action: starting, thinking, answering, then how it ended.

A question can run for a minute; the editor should show that the model is at work and whether it
is thinking. Session events arrive on the model thread, and pygls may only be called from its
event loop, so reports are handed over with `call_soon_threadsafe`.
"""

from __future__ import annotations

import uuid
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from katpilot.gate import Decision, Segment, Text
from katpilot.session import Finished, Response, SessionEvent
from lsp.language_server import KatpilotLanguageServer


class Progress:
    """Work-done progress of one request; silent when the client cannot show it."""

    def __init__(self, ls: KatpilotLanguageServer, title: str, token: Any) -> None:
        self.ls = ls
        self.title = title
        self.token = token  # the client's workDoneToken, else one we create in begin()
        self.thinking = False
        self.answering = False
        self.response: Response | None = None

    async def begin(self) -> None:
        """Create a token when the client supports it and we have none; report "starting…"."""
        if self.token is None and self.ls.client_supports("window", "work_done_progress"):
            self.token = str(uuid.uuid4())
            try:
                await self.ls.work_done_progress.create_async(self.token)
            except (TimeoutError, JsonRpcException):
                self.token = None
        if self.token is not None:
            self.ls.work_done_progress.begin(
                self.token, types.WorkDoneProgressBegin(title=self.title, message="starting…", cancellable=False)
            )

    def on_event(self, event: SessionEvent) -> None:
        """Called on the model thread for every session event."""
        if isinstance(event, Finished):
            self.response = event.response
        message = None
        starts_thinking = (isinstance(event, Decision) and event.mode == "on") or (
            isinstance(event, Text) and event.segment is Segment.THINK
        )
        if starts_thinking and not self.thinking:
            self.thinking, message = True, "thinking…"
        elif isinstance(event, Text) and event.segment is Segment.ANSWER and not self.answering:
            self.answering, message = True, "answering…"
        if message and self.token is not None and self.ls.loop is not None:
            report = types.WorkDoneProgressReport(message=message)
            self.ls.loop.call_soon_threadsafe(self.ls.work_done_progress.report, self.token, report)

    def end(self) -> None:
        """On the event loop, once the model has stopped: how it ended and after how many tokens."""
        if self.token is None:
            return
        message = "stopped"
        if self.response is not None:
            stats = self.response.stats
            how = "cancelled" if stats.finish_reason == "cancelled" else "done"
            message = f"{how} after {stats.completion_tokens} tokens (think {self.response.mode})"
        self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
