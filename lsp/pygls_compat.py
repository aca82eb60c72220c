# Pins in pyproject.toml that exist because of this module:
#   "pygls>=2.0,<3"  every shim below is written against pygls 2 (checked on 2.1.1). pygls promises
#                    nothing about underscored names, even in a minor release, so before raising
#                    the cap (or after any pygls upgrade) run tests/test_lsp_compat.py: it checks
#                    each internal on the installed version and names the one that moved.
"""Every use of pygls' private API, in one place, each behind a small function.

| shim | pygls internal it wraps |
|---|---|
| `send_error_response` | `JsonRPCProtocol._send_response` |
| `current_request_future` | `JsonRPCProtocol._request_futures` |
| `new_stop_event` | `JsonRPCServer._stop_event` |
| `start_io` | a copy of `JsonRPCServer._start_io_async` (and `pygls.io_`'s reader and writer) |
| `RPC_LOGGER` | the name of the logger `pygls.protocol.json_rpc` reports error responses on |
| `to_json` | none any more: the public `default_converter()` replaced `protocol._converter` |

Everything else in lsp/ (and tests/lsp_helpers.py) uses pygls' public API: LanguageServer and
LanguageClient, feature and command registration, `protocol.structure_message` /
`handle_message` / `set_writer` / `msg_id`, `work_done_progress`, `workspace`. When pygls grows a
public way to do one of these things, replace the shim's body and keep its name.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future as ThreadFuture
from typing import TYPE_CHECKING, Any, BinaryIO

from lsprotocol.types import ResponseError
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.protocol import JsonRPCProtocol, default_converter
from pygls.server import JsonRPCServer

if TYPE_CHECKING:
    from cattrs import Converter

# pygls logs every error response it sends, with a traceback, on this logger (the module's
# `logger = logging.getLogger(__name__)`); lsp.refusals filters our chosen refusals out of it.
RPC_LOGGER = "pygls.protocol.json_rpc"

# lsp.transport.serve_frames: (reader, protocol, stop) -> runs until end of input or stop.
FrameLoop = Callable[[Any, JsonRPCProtocol, threading.Event], Coroutine[Any, Any, None]]


def send_error_response(protocol: JsonRPCProtocol, msg_id: int | str | None, error: ResponseError) -> None:
    """Send a JSON-RPC error response for a frame pygls never saw as a request.

    Wraps `JsonRPCProtocol._send_data(message)`. pygls has no public way to answer a message it
    could not parse (it logs and drops it); lsp.transport answers such frames itself. The message
    is built here rather than by `_send_response` because pygls' response types leave a null id
    out, and JSON-RPC 2.0 wants `"id": null` when the request's id could not be read.
    """
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "error": body})


def current_request_future(protocol: JsonRPCProtocol) -> asyncio.Future[Any] | ThreadFuture[Any] | None:
    """The future pygls keeps for the request being handled, which `$/cancelRequest` cancels.

    Wraps `JsonRPCProtocol._request_futures[msg_id]` (with the public `msg_id` of the current
    context). pygls runs a `workspace/executeCommand` handler as an inner task of its own, so a
    cancel reaches only this outer future; lsp.questions watches it to stop the model.
    """
    msg_id = protocol.msg_id
    if msg_id is None:
        return None
    return protocol._request_futures.get(msg_id)


@functools.cache
def _converter() -> Converter:
    return default_converter()  # type: ignore[no-any-return, no-untyped-call]  # pygls leaves it unannotated


def to_json(value: Any) -> Any:
    """An lsprotocol value as plain JSON data, as pygls puts it on the wire.

    Replaces `protocol._converter.unstructure`: the public `pygls.protocol.default_converter()` is
    the factory pygls builds both the server's and the client's converter with (neither is given
    another), so it gives the same JSON.
    """
    return _converter().unstructure(value)


def new_stop_event(server: JsonRPCServer) -> threading.Event:
    """A stop event for our frame loop that pygls' `shutdown()` sets.

    Wraps `JsonRPCServer._stop_event`: pygls' own start-up methods create it and `shutdown()` sets
    it; our start-ups replace pygls' loop (lsp.transport) and must hand it the same event.
    """
    stop = threading.Event()
    server._stop_event = stop
    return stop


def start_io(
    server: JsonRPCServer, frame_loop: FrameLoop, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
) -> None:
    """Serve over stdin/stdout with `frame_loop` instead of pygls' `run_async`, until end of input.

    A copy of `JsonRPCServer._start_io_async` (pygls 2) with the frame loop swapped: the same
    stop event, the same reader on pygls' thread pool, the same writer. pygls gives no hook to
    replace its loop, so an upgrade that changes that method needs this copy compared with it.
    The caller shuts the server down afterwards (pygls' copy calls `shutdown()` itself).
    """
    stop = new_stop_event(server)
    reader = StdinAsyncReader(stdin or sys.stdin.buffer, server.thread_pool)
    server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
    try:
        asyncio.run(frame_loop(reader, server.protocol, stop))
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the client went away, or ^C: end quietly
