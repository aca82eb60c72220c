"""The pygls internals lsp/pygls_compat.py relies on still exist and still behave as it assumes.

Each test names the internal it checks, so a pygls upgrade that moves one fails here with that name
instead of as a hang or a dropped message in the end-to-end LSP tests. Runs in-process, no model.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
from importlib.metadata import version
from typing import Any

import pytest
from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCProtocol
from pygls.server import JsonRPCServer

from lsp import pygls_compat
from lsp.documents import RequestRefused
from lsp.refusals import QuietRefusals
from lsp.transport import serve_frames

VERSION = version("pygls")


def moved(internal: str, shim: str, what: str) -> str:
    """The failure message: which internal, which shim uses it, and what to do."""
    return (
        f"pygls {VERSION}: {internal} {what}. lsp/pygls_compat.py:{shim} depends on it; "
        "find pygls' new way to do the same and change only that shim (see its docstring)"
    )


class Capture:
    """A synchronous pygls writer keeping what was sent."""

    def __init__(self) -> None:
        self.data = b""
        self.written = asyncio.Event()  # set at each write, for tests that await a response

    def write(self, data: bytes) -> None:
        self.data += data
        self.written.set()

    def close(self) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        bodies = self.data.split(b"\r\n\r\n")[1:]
        return [json.loads(body.split(b"Content-Length")[0]) for body in bodies]


def server() -> LanguageServer:
    ls = LanguageServer("compat-test", "1")
    ls.protocol.set_writer(Capture())
    return ls


def receive(ls: LanguageServer, message: dict[str, Any]) -> None:
    ls.protocol.handle_message(ls.protocol.structure_message({"jsonrpc": "2.0", **message}))


def test_send_data_answers_a_frame_pygls_never_parsed() -> None:
    method = getattr(JsonRPCProtocol, "_send_data", None)
    assert callable(method), moved("JsonRPCProtocol._send_data", "send_error_response", "is gone")
    parameters = list(inspect.signature(method).parameters)
    assert parameters == ["self", "data"], moved(
        "JsonRPCProtocol._send_data", "send_error_response", f"takes {parameters}, not (data)"
    )
    ls = server()
    pygls_compat.send_error_response(ls.protocol, None, types.ResponseError(code=-32700, message="parse error"))
    pygls_compat.send_error_response(ls.protocol, 7, types.ResponseError(code=-32602, message="bad", data={"f": 1}))
    sent = ls.protocol.writer.messages()  # type: ignore[union-attr]
    expected = [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}},  # "id": null is sent
        {"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "bad", "data": {"f": 1}}},
    ]
    assert sent == expected, moved("JsonRPCProtocol._send_data", "send_error_response", f"sent {sent!r}")


def test_request_futures_hold_the_future_cancel_request_cancels() -> None:
    ls = server()
    assert isinstance(getattr(ls.protocol, "_request_futures", None), dict), moved(
        "JsonRPCProtocol._request_futures", "current_request_future", "is gone or no longer a dict"
    )
    assert isinstance(inspect.getattr_static(JsonRPCProtocol, "msg_id", None), property), moved(
        "JsonRPCProtocol.msg_id", "current_request_future", "is no longer a property"
    )
    seen: dict[str, Any] = {}

    async def main() -> None:
        running, outer_done = asyncio.Event(), asyncio.Event()

        @ls.command("compat.wait")
        async def wait(ls: LanguageServer, *args: Any) -> None:
            seen["outer"] = outer = pygls_compat.current_request_future(ls.protocol)
            if outer is not None:
                outer.add_done_callback(lambda _future: outer_done.set())
            running.set()
            await asyncio.Event().wait()  # until cancelled

        receive(
            ls, {"id": 7, "method": "workspace/executeCommand", "params": {"command": "compat.wait", "arguments": []}}
        )
        await asyncio.wait_for(running.wait(), 10)
        assert seen["outer"] is not None, moved(
            "JsonRPCProtocol._request_futures[msg_id]",
            "current_request_future",
            "has no future for the command being run",
        )
        receive(ls, {"method": "$/cancelRequest", "params": {"id": 7}})
        await asyncio.wait_for(outer_done.wait(), 10)
        assert seen["outer"].cancelled(), moved(
            "JsonRPCProtocol._request_futures[msg_id]",
            "current_request_future",
            "holds a future that $/cancelRequest does not cancel",
        )

    asyncio.run(main())
    assert pygls_compat.current_request_future(ls.protocol) is None  # outside any request


def test_shutdown_sets_the_stop_event() -> None:
    ls = server()
    assert hasattr(ls, "_stop_event"), moved("JsonRPCServer._stop_event", "new_stop_event", "is gone")
    stop = pygls_compat.new_stop_event(ls)
    ls.shutdown()
    assert stop.is_set(), moved("JsonRPCServer._stop_event", "new_stop_event", "is no longer set by shutdown()")


def test_start_io_copy_still_matches_pygls() -> None:
    original = getattr(JsonRPCServer, "_start_io_async", None)
    assert callable(original), moved("JsonRPCServer._start_io_async", "start_io", "is gone (start_io is a copy of it)")
    source = inspect.getsource(original)
    for piece in (
        "self._stop_event = Event()",
        "StdinAsyncReader(",
        "self.thread_pool",
        "StdoutWriter(",
        "set_writer(",
        "self.shutdown()",
    ):
        assert piece in source, moved(
            "JsonRPCServer._start_io_async", "start_io", f"no longer does {piece!r}: compare the copy"
        )


def test_start_io_serves_frames_over_binary_streams() -> None:
    ls = LanguageServer("compat-test", "1")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}).encode()
    stdin, stdout = io.BytesIO(b"Content-Length: %d\r\n\r\n" % len(body) + body), io.BytesIO()
    try:
        pygls_compat.start_io(ls, serve_frames, stdin, stdout)
    finally:
        ls.shutdown()
    assert b'"id": 1' in stdout.getvalue() and b'"capabilities"' in stdout.getvalue(), moved(
        "pygls.io_.StdinAsyncReader / StdoutWriter",
        "start_io",
        f"no longer serve binary streams (wrote {stdout.getvalue()[:200]!r})",
    )


def test_error_responses_are_logged_on_the_logger_we_filter(caplog: pytest.LogCaptureFixture) -> None:
    ls = server()

    @ls.command("compat.refuse")
    async def refuse(ls: LanguageServer, *args: Any) -> None:
        raise RequestRefused("no")

    async def main() -> None:
        receive(
            ls, {"id": 3, "method": "workspace/executeCommand", "params": {"command": "compat.refuse", "arguments": []}}
        )
        await asyncio.wait_for(ls.protocol.writer.written.wait(), 10)  # type: ignore[union-attr]  # our Capture

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    refusals = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RequestRefused)]
    assert refusals and all(r.name == pygls_compat.RPC_LOGGER for r in refusals), moved(
        f"the logger {pygls_compat.RPC_LOGGER!r}",
        "RPC_LOGGER",
        f"no longer logs error responses (got {[r.name for r in refusals]})",
    )
    assert not any(QuietRefusals().filter(r) for r in refusals)


def test_to_json_is_what_pygls_sends() -> None:
    edit = types.WorkspaceEdit(document_changes=[types.CreateFile(uri="file:///t.py")])
    assert pygls_compat.to_json(edit) == {"documentChanges": [{"kind": "create", "uri": "file:///t.py"}]}, moved(
        "pygls.protocol.default_converter()", "to_json", "no longer gives LSP's camelCase JSON"
    )
