"""`katpilot chat`: a Textual app over the one session, gate, index and history.

Generation runs in a worker thread; its events go into a list that the UI drains on a timer
(DRAIN_INTERVAL_S), so a fast stream never floods the event loop and the model never waits for the
screen. Esc (or Ctrl+C) sets the session's cancel event: the answer so far is kept and saved as
partial. Every completed message is committed to the history as it completes.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import ClassVar, TypedDict, Unpack

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Input, Static
from textual.widgets.markdown import MarkdownStream

from katpilot.chat.widgets import AssistantMessage, NoticeLine, PromptInput, UserMessage, badge_text
from katpilot.config import Settings
from katpilot.errors import KatpilotError
from katpilot.gate import Decision, Segment, Text
from katpilot.history import History
from katpilot.models import load_engine, new_session, think_controls
from katpilot.session import ChatSession, Finished, Notice, Response
from katpilot.terms import ThinkMode

# Five screen updates a second: the UI thread shares the GIL with the generating thread, and each
# update costs the model time (bench/chat.py on 2 cores: ratio 0.91 at 10 Hz, 0.95 at 5 Hz).
DRAIN_INTERVAL_S = 0.2


def chat_threads(settings: Settings) -> Settings:
    """Leave one core to the UI unless the user chose a thread count.

    llama.cpp's threads wait for each other at every step; when the UI thread takes one of their
    cores, they all stall. On 2 cores, one llama.cpp thread in the chat streams about 115 tok/s
    where two manage about 65 (bench/chat.py).
    """
    if settings.n_threads is not None:
        return settings
    cores = os.cpu_count() or 1
    return replace(settings, n_threads=max(1, cores - 1)) if cores > 1 else settings


THINK_CYCLE: dict[ThinkMode, ThinkMode] = {"auto": "on", "on": "off", "off": "auto"}
HELP = """\
/think auto|on|off   who decides whether to think (Ctrl+T cycles)
/budget N|none       close the think block after N tokens
/threshold P         think=auto: think when p(on) >= P
/model PATH          switch to another model
/add FILE            attach a workspace file (secrets withheld) to the next question
/map                 attach the ranked repo map to the next question
/export              write this chat as Markdown
/clear               start a new chat
/history             list saved chats
/help                this list
Esc or Ctrl+C stops the answer; Ctrl+C again (or Ctrl+Q) quits."""


class _MessageFields(TypedDict, total=False):
    """History.add_message's optional keyword arguments."""

    judge: str
    think: str
    mode: str | None
    decided_by: str | None
    p_on: float | None
    stats: dict[str, object] | None
    partial: bool


class ChatApp(App[None]):
    """The terminal chat."""

    TITLE = "katpilot"
    CSS = """
    #log { height: 1fr; }
    #status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    #prompt { dock: bottom; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+t", "cycle_think", "think mode"),
        Binding("escape", "stop", "stop", show=False),
        Binding("ctrl+c", "stop_or_quit", "stop / quit", priority=True),
        Binding("ctrl+q", "quit", "quit"),
    ]

    def __init__(
        self,
        settings: Settings,
        workspace: Path | None = None,
        resume: int | None = None,
        history_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.workspace = (workspace or Path.cwd()).resolve()
        self.resume_id = resume
        self.history_path = history_path
        self.controls = think_controls(settings)
        self.session: ChatSession | None = None
        self.history: History | None = None
        self.chat_id: int | None = None
        self.attachments: list[str] = []
        self.generating = False
        self.cancel = threading.Event()
        self._pending: list[object] = []
        self._lock = threading.Lock()
        self._current: AssistantMessage | None = None
        self._stream: MarkdownStream | None = None
        self._last_ctrl_c = 0.0
        self.model_name = "loading…"
        self.tokens_per_s = 0.0
        self.think_on_tokens: list[int] = []
        self.think_off_answers = 0
        self.responses: list[Response] = []

    # -- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="log")
        yield Static("", id="status")
        yield PromptInput(placeholder="Ask, or /help", id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(DRAIN_INTERVAL_S, self._drain)
        self._open_history()
        self._update_status()
        self.query_one("#prompt", Input).focus()
        self.load_model(self.settings)

    # -- status -----------------------------------------------------------------------------------

    @property
    def saved_tokens(self) -> int:
        """Think tokens avoided: think-off answers times the mean think length of think-on ones."""
        if not self.think_on_tokens:
            return 0
        return round(self.think_off_answers * sum(self.think_on_tokens) / len(self.think_on_tokens))

    def _tally(self, mode: str | None, decided_by: str | None, think_tokens: int) -> None:
        """Count one answer (new or resumed) towards "AutoThink saved".

        Only a think-off answer the model chose saves anything: a forced one (the user's) or one
        nobody decided (a plain model, NO_DECISION) would have been off anyway.
        """
        if mode == "on":
            self.think_on_tokens.append(think_tokens)
        elif decided_by == "model":
            self.think_off_answers += 1

    def _update_status(self) -> None:
        parts = [
            self.model_name,
            f"think {self.controls.think}"
            + (f" · budget {self.controls.budget}" if self.controls.budget else "")
            + (f" · threshold {self.controls.threshold:g}" if self.controls.think == "auto" else ""),
            f"{self.tokens_per_s:.0f} tok/s",
            f"AutoThink saved ~{self.saved_tokens} tokens",
        ]
        if self.attachments:
            parts.append(f"{len(self.attachments)} attached")
        self.query_one("#status", Static).update(" · ".join(parts))

    def notice(self, text: str, error: bool = False) -> None:
        log = self.query_one("#log", VerticalScroll)
        log.mount(NoticeLine(text, classes="error" if error else ""))
        log.scroll_end(animate=False)

    # -- model and history ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="model")
    def load_model(self, settings: Settings) -> None:
        """Load (or switch) the model off the UI thread."""
        try:
            engine = load_engine(chat_threads(settings))
            old = self.session
            if old is not None:  # a model switch keeps the conversation
                history = list(old.history)
            elif self.history and self.chat_id is not None:  # a resumed chat
                history = self.history.conversation(self.chat_id)
            else:
                history = []
            session = new_session(engine, settings, history=history)
        except KatpilotError as exc:
            self.call_from_thread(self.notice, f"error: {exc.one_line()}", True)
            return
        if old is not None:
            old.engine.close()
        self.session, self.settings = session, settings
        self.call_from_thread(self._model_ready, engine.info.name)

    def _model_ready(self, name: str) -> None:
        self.model_name = name
        self._update_status()

    def _open_history(self) -> None:
        try:
            self.history = History(self.history_path)
        except KatpilotError as exc:
            self.notice(f"history disabled: {exc.one_line()}", error=True)
            return
        for text in self.history.notices:
            self.notice(text, error=True)
        if self.resume_id is not None:
            self._resume(self.resume_id)

    def _resume(self, chat_id: int) -> None:
        assert self.history is not None
        try:
            chat = self.history.chat(chat_id)
        except KatpilotError as exc:
            self.notice(f"error: {exc.one_line()}", error=True)
            return
        self.chat_id = chat.id
        log = self.query_one("#log", VerticalScroll)
        for m in self.history.messages(chat.id):
            if m.role == "user":
                log.mount(UserMessage(m.content))
            elif m.role == "assistant":
                thinking = "\n".join(part for part in (m.judge, m.think) if part)
                log.mount(AssistantMessage(m.content, thinking, badge_text(m.mode, m.decided_by, m.p_on, m.partial)))
                think_tokens = m.stats.get("think_tokens")
                self._tally(m.mode, m.decided_by, think_tokens if isinstance(think_tokens, int) else 0)
        self.notice(f"resumed chat {chat.id}: {chat.title}")
        self._update_status()
        log.scroll_end(animate=False)

    def _save(self, role: str, content: str, **fields: Unpack[_MessageFields]) -> None:
        if self.history is None:
            return
        try:
            if self.chat_id is None:
                self.chat_id = self.history.new_chat(self.model_name)
            self.history.add_message(self.chat_id, role, content, **fields)
        except KatpilotError as exc:
            self.notice(f"not saved: {exc.one_line()}", error=True)

    # -- input ------------------------------------------------------------------------------------

    @on(Input.Submitted, "#prompt")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if text.startswith("/"):
            self.run_command(text)
        elif self.generating:
            self.notice("still answering: press Esc to stop it first")
        elif self.session is None:
            self.notice("the model is still loading")
        else:
            self.ask(text)

    def ask(self, text: str) -> None:
        prompt = "\n\n".join([*self.attachments, text]) if self.attachments else text
        self.attachments = []
        log = self.query_one("#log", VerticalScroll)
        log.mount(UserMessage(text))
        self._save("user", prompt)
        self._current = AssistantMessage()
        log.mount(self._current)
        log.scroll_end(animate=False)
        self.generating = True
        self.cancel = threading.Event()
        self._stream = None
        self.generate(prompt)

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, prompt: str) -> None:
        """Run the session in this worker thread; events go to the UI through `_pending`."""
        assert self.session is not None
        try:
            for event in self.session.send(prompt, self.controls, self.cancel):
                with self._lock:
                    self._pending.append(event)
        except KatpilotError as exc:
            with self._lock:
                self._pending.append(exc)
        except Exception as exc:  # a llama.cpp failure shows inline, never a traceback
            with self._lock:
                self._pending.append(KatpilotError(f"{type(exc).__name__}: {exc}", "see KATPILOT_DEBUG=1 katpilot ask"))

    async def _drain(self) -> None:
        """Apply the events the worker produced since the last tick (rendering is throttled here)."""
        message = self._current
        if message is None or not message.ready:
            return  # the message widget is not composed yet: its events wait for the next tick
        with self._lock:
            events, self._pending = self._pending, []
        if not events:
            return
        answer = "".join(e.text for e in events if isinstance(e, Text) and e.segment is Segment.ANSWER)
        thinking = "".join(
            e.text for e in events if isinstance(e, Text) and e.segment in (Segment.JUDGE, Segment.THINK)
        )
        if thinking:
            message.add_thinking(thinking)
        if answer:
            if self._stream is None:
                self._stream = message.answer.get_stream(message.answer)
            await self._stream.write(answer)
        for event in events:
            if isinstance(event, Decision):
                message.badge.update(badge_text(event.mode, event.decided_by, event.p_on))
            elif isinstance(event, Notice):
                self.notice(event.text)
            elif isinstance(event, KatpilotError):
                self.notice(f"error: {event.one_line()}", error=True)
                await self._finish(None)
            elif isinstance(event, Finished):
                await self._finish(event.response)
        self.query_one("#log", VerticalScroll).scroll_end(animate=False)

    async def _finish(self, response: Response | None) -> None:
        message = self._current
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self._current = None
        self.generating = False
        if response is None or message is None:
            return
        stopped = response.stats.finish_reason == "cancelled"
        message.badge.update(badge_text(response.mode, response.decided_by, response.p_on, stopped))
        self._tally(response.mode, response.decided_by, response.stats.think_tokens)
        self.tokens_per_s = response.stats.tokens_per_s
        self.responses.append(response)
        self._save(
            "assistant",
            response.answer,
            judge=response.judge,
            think=response.think,
            mode=response.mode,
            decided_by=response.decided_by,
            p_on=response.p_on,
            stats=asdict(response.stats),
            partial=stopped,
        )
        self._update_status()

    # -- actions ----------------------------------------------------------------------------------

    def action_cycle_think(self) -> None:
        self.controls = replace(self.controls, think=THINK_CYCLE[self.controls.think])
        self._update_status()

    def action_stop(self) -> None:
        if self.generating:
            self.cancel.set()

    def action_stop_or_quit(self) -> None:
        now = time.monotonic()
        if self.generating:
            self.cancel.set()
        elif now - self._last_ctrl_c < 2.0:
            self.exit()
        else:
            self.notice("press Ctrl+C again (or Ctrl+Q) to quit")
        self._last_ctrl_c = now

    def run_command(self, line: str) -> None:
        from katpilot.chat.commands import run_command

        try:
            run_command(self, line)
        except KatpilotError as exc:
            self.notice(f"error: {exc.one_line()}", error=True)
        self._update_status()

    def on_unmount(self) -> None:
        self.cancel.set()
        if self.history is not None:
            self.history.close()
