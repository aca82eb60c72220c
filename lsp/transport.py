"""The JSON-RPC frame loop: read `Content-Length` frames and answer bad ones instead of dropping them.

pygls' own loop logs a body that is not JSON, or a request whose params do not fit the method,
and sends nothing back, so the client waits forever for that request. Here every frame gets what
JSON-RPC 2.0 prescribes: Parse error (-32700, id null) for a body that is not JSON, Invalid
Request (-32600) for JSON that is not a request, Invalid params (-32602) with the request's id for
params of the wrong shape. Lines that are not headers are skipped, and so is everything after a
header announcing more than MAX_MESSAGE_BYTES, up to the next Content-Length header: a client that
sends garbage and then a proper frame is served.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Awaitable
from typing import Any, Protocol

from lsprotocol.types import ResponseError
from pygls.exceptions import JsonRpcException
from pygls.protocol import JsonRPCProtocol

from lsp.pygls_compat import send_error_response

log = logging.getLogger(__name__)
# Searched at the end of a line, so a header glued to the garbage before it still counts.
_CONTENT_LENGTH = re.compile(rb"content-length:[ \t]*(\d+)[ \t]*$", re.IGNORECASE)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602


class AsyncReader(Protocol):
    """What the loop reads from: asyncio's StreamReader (TCP) or pygls' StdinAsyncReader (stdio)."""

    def readline(self) -> Awaitable[bytes]: ...

    def readexactly(self, n: int) -> Awaitable[bytes]: ...


async def serve_frames(reader: AsyncReader, protocol: JsonRPCProtocol, stop: threading.Event) -> None:
    """Read frames until end of input or `stop`; each frame is handled or answered with an error."""
    while not stop.is_set():
        length = await _read_headers(reader)
        if length is None:
            return
        if length > MAX_MESSAGE_BYTES:
            # Not read: what follows is skipped as garbage up to the next Content-Length header.
            _reply_error(
                protocol,
                None,
                INVALID_REQUEST,
                f"message of {length:,} bytes is over the {MAX_MESSAGE_BYTES:,}-byte limit",
            )
            continue
        body = await _read_body(reader, length)
        if body is None:
            return
        handle_frame(body, protocol)


async def _read_headers(reader: AsyncReader) -> int | None:
    """The Content-Length of the next frame, skipping lines that are not headers; None at EOF."""
    length: int | None = None
    while True:
        line = await reader.readline()
        if not line:
            return None
        if not line.strip():
            if length is not None:
                return length
            continue  # a blank line before any Content-Length: nothing to read yet
        match = _CONTENT_LENGTH.search(line.rstrip(b"\r\n"))
        if match:
            length = int(match.group(1))
        elif b":" not in line:
            log.warning("skipped a line that is not a header: %r", line[:80])


async def _read_body(reader: AsyncReader, length: int) -> bytes | None:
    try:
        body = await reader.readexactly(length)
    except Exception:  # asyncio.IncompleteReadError on sockets: the client went away mid-frame
        return None
    return body if len(body) == length else None


def handle_frame(body: bytes, protocol: JsonRPCProtocol) -> None:
    """Decode one frame body and pass it to pygls, or answer the JSON-RPC error it deserves."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        _reply_error(protocol, None, PARSE_ERROR, "parse error: the message body is not valid JSON")
        return
    if isinstance(data, list):
        _reply_error(
            protocol, None, INVALID_REQUEST, "batch requests are not supported by LSP: send one message per frame"
        )
        return
    msg_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(msg_id, (int, str)):
        msg_id = None
    problem = _shape_problem(data)
    if problem:
        _reply_error(protocol, msg_id, INVALID_REQUEST, f"invalid request: {problem}")
        return
    try:
        message = protocol.structure_message(data)
    except JsonRpcException:
        if msg_id is not None and "method" in data:
            _reply_error(
                protocol,
                msg_id,
                INVALID_PARAMS,
                f"invalid params for {data['method']}: they do not match the LSP specification",
            )
        else:
            log.warning("dropped a notification or response of the wrong shape: %r", body[:200])
        return
    try:
        protocol.handle_message(message)
    except Exception:  # a handler bug must not end the loop; pygls answers request errors itself
        log.exception("failed to handle %r", body[:200])


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "a message must be a JSON object"
    if data.get("jsonrpc") != "2.0":
        return 'the "jsonrpc" member must be "2.0"'
    if "method" in data and not isinstance(data["method"], str):
        return 'the "method" member must be a string'
    if "method" not in data and "id" not in data:
        return 'a message needs a "method" (request, notification) or an "id" (response)'
    if "id" in data and data["id"] is not None and not isinstance(data["id"], (int, str)):
        return 'the "id" member must be a number or a string'
    return None


def _reply_error(protocol: JsonRPCProtocol, msg_id: int | str | None, code: int, message: str) -> None:
    log.warning("%s", message)
    send_error_response(protocol, msg_id, ResponseError(code=code, message=message))
