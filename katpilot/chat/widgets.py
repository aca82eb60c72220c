"""The chat's message widgets: a user turn, and an assistant turn with its mode badge, a collapsible
thinking panel (judge + think, collapsed by default) and the answer as Markdown."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Input, Markdown, Static

from katpilot.gate import NO_DECISION


def badge_text(mode: str | None, decided_by: str | None, p_on: float | None, stopped: bool = False) -> str:
    """THINK ON / THINK OFF, who decided, p(on) at the decision point.

    An answer nobody decided (a plain model has no decision point) says "no decision", not "model".
    """
    if mode is None:
        label = "deciding…"
    else:
        if decided_by == "user":
            who = "you"
        elif decided_by == NO_DECISION:
            who = "no decision"
        else:
            who = decided_by or "model"
        label = f"THINK {mode.upper()} · {who}" + (f" · p(on) {p_on:.2f}" if p_on is not None else "")
    return label + (" · stopped" if stopped else "")


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage { margin: 1 0 0 0; padding: 0 1; border-left: thick $accent; }
    """


class NoticeLine(Static):
    """Something the user should know (an error, a trimmed turn, a command's result), one line in the log.

    Not the session's `Notice` event, though a session notice is one of the things shown this way.
    """

    DEFAULT_CSS = """
    NoticeLine { color: $text-muted; padding: 0 1; }
    NoticeLine.error { color: $error; }
    """


class AssistantMessage(Vertical):
    DEFAULT_CSS = """
    AssistantMessage { height: auto; margin: 1 0 0 0; }
    AssistantMessage .badge { color: $secondary; padding: 0 1; }
    AssistantMessage Collapsible { margin: 0; padding: 0; border: none; }
    AssistantMessage .thinking { color: $text-muted; padding: 0 1; }
    AssistantMessage Markdown { margin: 0; padding: 0 1; }
    """

    def __init__(self, answer: str = "", thinking: str = "", badge: str = "deciding…") -> None:
        super().__init__()
        self._initial = (answer, thinking, badge)
        self.thinking_text = thinking

    def compose(self) -> ComposeResult:
        answer, thinking, badge = self._initial
        yield Static(badge, classes="badge")
        with Collapsible(title="thinking", collapsed=True):
            yield Static(thinking, classes="thinking")
        yield Markdown(answer)

    @property
    def ready(self) -> bool:
        """Composed and mounted: its parts can be updated."""
        return self.is_mounted and bool(self.query(Markdown))

    @property
    def badge(self) -> Static:
        return self.query_one(".badge", Static)

    @property
    def panel(self) -> Collapsible:
        return self.query_one(Collapsible)

    @property
    def answer(self) -> Markdown:
        return self.query_one(Markdown)

    def add_thinking(self, text: str) -> None:
        self.thinking_text += text
        self.query_one(".thinking", Static).update(self.thinking_text)


class PromptInput(Input):
    """The question line. It takes Enter itself, in its own message queue, and empties itself at
    once: so keys typed ahead are neither wiped nor joined to the line before them.

    (Input leaves Enter to a binding, which runs once the key has bubbled up to the app; by then
    this widget may have inserted the keys typed after it, and submitted "a" Enter "b" as "ab".)

    Only public Textual API: a subclass's `on_key` runs before the base classes' key handlers, and
    `prevent_default()` keeps them from running (Textual guide, Events, "Default behaviors"). Every
    other key goes on to Input's own handler, which inserts it. `tests/test_compat_textual.py`
    checks that this still holds after a Textual upgrade.
    """

    async def on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            await self.action_submit()

    async def action_submit(self) -> None:
        value, self.value = self.value, ""
        self.post_message(self.Submitted(self, value, None))
