"""A refusal is an answer, not a crash: katpilot's errors become JSON-RPC errors and stay out of the crash log.

Handlers raise `RequestRefused` (or pygls' InvalidParams / ContentModified) for requests they will
not carry out; the client shows the message, which names the fix. pygls logs every error response
with a traceback, which would make each refusal look like a server bug in the editor's LSP log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams

from katpilot.errors import KatpilotError
from lsp.documents import RequestRefused
from lsp.pygls_compat import RPC_LOGGER

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def refusing(handler: F) -> F:
    """Turn katpilot's errors (missing model, context overflow, ...) into JSON-RPC errors."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except KatpilotError as exc:
            raise RequestRefused(exc.one_line()) from exc

    return wrapped  # type: ignore[return-value]  # same signature, as functools.wraps promises


class QuietRefusals(logging.Filter):
    """Drops pygls' log records of the refusals we chose; real handler failures still get logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (JsonRpcInvalidParams, JsonRpcContentModified, RequestRefused))


def quiet_refusals() -> None:
    """Install `QuietRefusals` on the logger pygls reports error responses on."""
    logging.getLogger(RPC_LOGGER).addFilter(QuietRefusals())
