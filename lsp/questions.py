"""Questions to the model (actions, `katpilot.ask`, Explain): run on the model thread, cancellable, with progress.

The event loop only waits; the model thread generates. A cancel (the client's `$/cancelRequest`,
or the server stopping) sets the question's `threading.Event`, which the session checks before
every token, so the model really stops and the progress says after how many tokens.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pygls.exceptions import JsonRpcInvalidParams

from katpilot.models import think_controls
from katpilot.session import Response, ThinkControls
from katpilot.terms import THINK_MODES
from lsp import generate, pygls_compat
from lsp.language_server import KatpilotLanguageServer
from lsp.progress import Progress


def controls_for(ls: KatpilotLanguageServer, think: Any) -> ThinkControls:
    """The configured think controls, with `think` overridden for one request."""
    if think is not None and think not in THINK_MODES:
        raise JsonRpcInvalidParams(f"think must be auto, on or off, not {think!r}")
    return think_controls(ls.settings.base, think)


async def run_question(
    ls: KatpilotLanguageServer, text: str, controls: ThinkControls, title: str, token: Any
) -> Response:
    """Ask on the model thread with work-done progress ("thinking…" while in think mode).

    The progress ends when the model has actually stopped, saying how (done or cancelled) and
    after how many tokens, also when the request was cancelled before that.
    """
    progress = Progress(ls, title, token)
    await progress.begin()
    cancel = threading.Event()
    follow_cancellation(ls, cancel)
    ls.running.add(cancel)
    settings = ls.settings.base
    job = ls.model.submit(
        lambda: generate.ask(ls.model.engine(settings), settings, text, controls, cancel, progress.on_event)
    )
    loop = asyncio.get_running_loop()

    def finished(_job: object) -> None:
        ls.running.discard(cancel)
        if not loop.is_closed():  # the server may be shutting down
            loop.call_soon_threadsafe(progress.end)

    job.add_done_callback(finished)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        cancel.set()
        raise


def follow_cancellation(ls: KatpilotLanguageServer, cancel: threading.Event) -> None:
    """Set `cancel` when the client cancels the request being handled.

    pygls runs `workspace/executeCommand` handlers as an inner task under an id of its own, so a
    `$/cancelRequest` cancels only the outer request's future, never reaching the handler; watch
    that future too.
    """
    outer = pygls_compat.current_request_future(ls.protocol)
    if outer is not None:
        outer.add_done_callback(lambda future: cancel.set() if future.cancelled() else None)
