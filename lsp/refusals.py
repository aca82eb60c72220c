"""A refusal is an answer, not a crash: katpilot's errors become JSON-RPC errors and stay out of the crash log.

Handlers raise `RequestRefused` (or pygls' InvalidParams / ContentModified) for requests they will
not carry out; the client shows the message, which names the fix. pygls logs every error response
with a traceback, which would make each refusal look like a server bug in the editor's LSP log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams

from katpilot.errors import KatpilotError
from lsp.documents import RequestRefused
from lsp.pygls_compat import RPC_LOGGER

P = ParamSpec("P")
R = TypeVar("R")


def refusing(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn katpilot's errors (missing model, context overflow, ...) into JSON-RPC errors."""

    @functools.wraps(handler)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except KatpilotError as exc:
            raise RequestRefused(exc.one_line()) from exc

    return wrapped


class QuietRefusals(logging.Filter):
    """Drops pygls' log records of the refusals we chose; real handler failures still get logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (JsonRpcInvalidParams, JsonRpcContentModified, RequestRefused))


def quiet_refusals() -> None:
    """Install `QuietRefusals` on the logger pygls reports error responses on."""
    logging.getLogger(RPC_LOGGER).addFilter(QuietRefusals())
