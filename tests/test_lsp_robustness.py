"""Garbage on the wire: the server answers each bad frame as JSON-RPC says and keeps serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest
from lsp_helpers import CALC_PY

TIMEOUT_S = 120  # as lsp_helpers: a completion on a busy 2-core machine took over 60 s once


class RawServer:
    """`katpilot lsp` on pipes, written to byte by byte, its frames read on a thread."""

    def __init__(self, home: Path) -> None:
        env = {**os.environ, "KATPILOT_HOME": str(home)}
        with open(home / "stderr.txt", "wb") as stderr:  # the server keeps its own copy of the handle
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "katpilot", "lsp"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        self.frames: Queue[dict[str, Any]] = Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line.strip() == b"":
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert length is not None
            self.frames.put(json.loads(out.read(length)))

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def frame(self, body: bytes) -> None:
        self.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send(self, message: dict[str, Any]) -> None:
        self.frame(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def response(self, msg_id: Any) -> dict[str, Any]:
        """The next response with this id (notifications such as showMessage are skipped)."""
        while True:
            try:
                frame = self.frames.get(timeout=TIMEOUT_S)
            except Empty:
                raise AssertionError(f"no response with id {msg_id!r} within {TIMEOUT_S} s") from None
            if "method" not in frame and frame.get("id") == msg_id:
                return frame


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RawServer]:
    s = RawServer(tmp_path)
    yield s
    s.proc.kill()
    s.proc.wait()


def test_garbage_frames_and_bad_requests_get_errors_and_a_valid_request_then_succeeds(
    server: RawServer, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "calc.py").write_text(CALC_PY)
    uri = (root / "calc.py").as_uri()

    server.write(b"this is not a header\r\n\r\n")  # a line that is not a header, then a blank one
    server.frame(b"{not json")
    parse_error = server.response(None)
    assert parse_error["error"]["code"] == -32700
    assert "id" in parse_error and parse_error["id"] is None  # JSON-RPC 2.0: "id": null, not left out
    server.frame(b"\xff\xfe\x00garbage")
    assert server.response(None)["error"]["code"] == -32700
    server.frame(b"[1, 2, 3]")
    assert server.response(None)["error"]["code"] == -32600
    server.frame(json.dumps({"jsonrpc": "1.0", "id": 7, "method": "initialize"}).encode())
    assert server.response(7)["error"]["code"] == -32600

    server.send(
        {
            "id": 1,
            "method": "initialize",
            "params": {
                "processId": None,
                "rootUri": root.as_uri(),
                "capabilities": {},
                "initializationOptions": {"debounce_ms": 0, "completion_max_tokens": 16},
            },
        }
    )
    assert "capabilities" in server.response(1)["result"]
    server.send({"method": "initialized", "params": {}})

    server.send({"id": 2, "method": "textDocument/inlineCompletion", "params": {"foo": 1}})
    assert server.response(2)["error"]["code"] == -32602  # params of the wrong shape, answered with the id
    server.send({"id": 3, "method": "katpilot/noSuchMethod", "params": {}})
    assert server.response(3)["error"]["code"] == -32601
    server.send({"method": "katpilot/noSuchNotification", "params": {}})  # ignored, as notifications are

    position = {"textDocument": {"uri": uri}, "context": {"triggerKind": 1}}
    server.send(
        {
            "id": 4,
            "method": "textDocument/inlineCompletion",
            "params": {**position, "position": {"line": 0, "character": 0}},
        }
    )
    assert "didOpen" in server.response(4)["error"]["message"]
    server.send(
        {
            "method": "textDocument/didOpen",
            "params": {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": CALC_PY}},
        }
    )
    server.send(
        {
            "id": 5,
            "method": "textDocument/inlineCompletion",
            "params": {**position, "position": {"line": 4000, "character": 0}},
        }
    )
    assert server.response(5)["error"]["code"] == -32602
    server.send(
        {
            "id": 6,
            "method": "workspace/executeCommand",
            "params": {"command": "katpilot.ask", "arguments": [{"nothing": 1}]},
        }
    )
    assert "question" in server.response(6)["error"]["message"]
    server.send(
        {
            "id": 10,
            "method": "workspace/executeCommand",
            "params": {"command": "katpilot.ask", "arguments": [{"question": "q", "uri": uri, "range": {"start": 1}}]},
        }
    )
    error = server.response(10)["error"]
    assert error["code"] == -32602 and "a range must be" in error["message"]
    server.send({"id": 8, "method": "codeAction/resolve", "params": {"title": "x", "data": {"action": "rm -rf"}}})
    assert server.response(8)["error"]["code"] == -32602
    server.write(b"Content-Length: 999999999999\r\n\r\n")  # over the size limit: refused, then skipped
    assert server.response(None)["error"]["code"] == -32600

    server.send(
        {
            "id": 9,
            "method": "textDocument/inlineCompletion",
            "params": {**position, "position": {"line": 12, "character": 4}},
        }
    )
    result = server.response(9)["result"]
    assert len(result["items"]) == 1 and result["items"][0]["insertText"].strip()
    assert server.proc.poll() is None


def test_tcp_listens_on_loopback_and_serves_a_client(tmp_path: Path) -> None:
    import re
    import socket

    env = {**os.environ, "KATPILOT_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "katpilot", "lsp", "--tcp", "0"], stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        match = re.search(r"listening on (127\.0\.0\.1):(\d+)", line)
        assert match, line
        with socket.create_connection((match.group(1), int(match.group(2))), timeout=TIMEOUT_S) as sock:
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {"processId": None, "rootUri": None, "capabilities": {}},
                }
            ).encode()
            sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            reply = b""
            while b"capabilities" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, reply
                reply += chunk
            assert b'"id": 1' in reply or b'"id":1' in reply
    finally:
        proc.kill()
        proc.wait()


def test_a_bad_tcp_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "KATPILOT_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "katpilot", "lsp", "--tcp", "localhost:http"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "[HOST:]PORT" in result.stderr
