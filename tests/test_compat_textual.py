"""What the chat relies on in Textual, checked without a model: fails clearly after an upgrade that
changes it.

`PromptInput` takes Enter in its own `on_key` (public API) because Input leaves Enter to a binding
that runs only after the key has gone round the app. That needs two documented behaviours: a
subclass's `on_key` runs before Input's own key handler, and `prevent_default()` stops Input's.
"""

from __future__ import annotations

import asyncio

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Input

from katpilot.chat.widgets import PromptInput

pytestmark = pytest.mark.timeout(60)


class _PromptApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.submitted: list[str] = []

    def compose(self) -> ComposeResult:
        yield PromptInput(id="prompt")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.submitted.append(message.value)


def _key(char: str) -> events.Key:
    """A key as the terminal driver posts it."""
    if char == "\r":
        return events.Key("enter", "\r")
    return events.Key({" ": "space"}.get(char, char), char)


def test_prompt_takes_enter_before_the_keys_typed_after_it() -> None:
    async def run() -> tuple[list[str], str]:
        app = _PromptApp()
        async with app.run_test() as pilot:
            await pilot.pause()
            for char in "ab\rc d\re":
                app.post_message(_key(char))  # all queued at once, as keys typed ahead arrive
            for _ in range(100):
                if len(app.submitted) >= 2:
                    break
                await pilot.pause(0.02)
            await pilot.pause(0.05)
            return app.submitted, app.query_one(PromptInput).value

    submitted, left = asyncio.run(run())
    assert (submitted, left) == (["ab", "c d"], "e"), (
        "Textual no longer lets PromptInput.on_key take Enter before Input's own key handler (or"
        " prevent_default no longer stops it, or Input.Submitted changed): typed-ahead keys are"
        f" joined or lost: submitted {submitted!r}, left {left!r}. See katpilot/chat/widgets.py PromptInput."
    )


def test_printable_keys_still_reach_inputs_own_handler() -> None:
    async def run() -> str:
        app = _PromptApp()
        async with app.run_test() as pilot:
            await pilot.pause()
            for char in "hi there":
                app.post_message(_key(char))
            await pilot.pause(0.2)
            return app.query_one(PromptInput).value

    value = asyncio.run(run())
    assert value == "hi there", (
        f"PromptInput.on_key swallowed ordinary keys (value {value!r}): Textual no longer calls"
        " Input's own key handler after a subclass's on_key"
    )
