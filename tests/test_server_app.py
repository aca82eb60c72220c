"""The app in-process, where a failure must be made to happen on purpose: engine errors (a scripted
engine that fails), a bug (one that raises something unexpected), and the guard's answers
(API key before anything else, body size) checked without a server process.
"""

from __future__ import annotations

import threading
from collections.abc import Generator

from fastapi.testclient import TestClient
from scripted import QUESTION, ScriptedEngine, client_for, sse_chunks

from katpilot.config import load_settings
from katpilot.engine.base import SamplingParams, StreamStats
from katpilot.errors import EngineError
from katpilot.server.app import MAX_BODY_BYTES, create_app


class FailingEngine(ScriptedEngine):
    """Fails after its pieces, on purpose, `failures` times: how an engine error reaches a client."""

    failures = 1

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        yield from super().stream(prompt, params, cancel, stats)
        if self.failures:
            self.failures -= 1
            raise EngineError(
                "llama.cpp failed while generating: decode returned -3", "retry; if it persists, lower n_ctx"
            )


def test_engine_error_is_an_openai_error_not_a_traceback() -> None:
    with client_for(FailingEngine(["4"])) as client:
        reply = client.post("/v1/chat/completions", json={**QUESTION, "think": "off"})
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "engine_error"
    assert "decode returned -3" in error["message"] and "fix:" in error["message"]


def test_engine_error_mid_stream_is_an_error_event() -> None:
    with client_for(FailingEngine(["4", "2"])) as client:
        reply = client.post("/v1/chat/completions", json={**QUESTION, "think": "off", "stream": True})
    assert reply.status_code == 200
    chunks = sse_chunks(reply.text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices")) == "42"
    assert chunks[-1]["error"]["code"] == "engine_error"


def test_after_an_error_the_server_still_serves() -> None:
    engine = FailingEngine(["4"])
    with client_for(engine) as client:
        assert client.post("/v1/chat/completions", json={**QUESTION, "think": "off"}).status_code == 500
        assert client.get("/health").json()["queue"]["in_flight"] == 0
        engine.pieces = ["5"]
        again = client.post("/v1/chat/completions", json={**QUESTION, "think": "off"})
        assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] == "5"


class BrokenEngine(ScriptedEngine):
    """Fails with a bug, not a KatpilotError, on purpose."""

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        raise RuntimeError("something nobody anticipated")
        yield ""


def test_unexpected_error_is_a_plain_500_without_a_traceback() -> None:
    settings = load_settings({"profile": "kat"}).settings
    with TestClient(create_app(BrokenEngine([]), settings), raise_server_exceptions=False) as client:
        reply = client.post("/v1/chat/completions", json={**QUESTION, "think": "off"})
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["type"] == "server_error" and "RuntimeError" in error["message"]
    assert "Traceback" not in reply.text and "anticipated" not in reply.text


def keyed_client() -> TestClient:
    return TestClient(
        create_app(ScriptedEngine(["4", "</answer>"]), load_settings({"profile": "kat"}).settings, api_key="k")
    )


def test_missing_key_is_401_before_the_body_is_even_parsed() -> None:
    with keyed_client() as client:
        for headers in ({}, {"Authorization": "Basic k"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
            reply = client.post(
                "/v1/chat/completions", content=b"{not json", headers={**headers, "Content-Type": "application/json"}
            )
            assert reply.status_code == 401, headers
            assert reply.json()["error"]["code"] == "invalid_api_key"
        assert (
            client.post("/v1/chat/completions", content=b"{not json", headers={"Authorization": "bearer k"}).status_code
            == 400
        )


def test_oversized_bodies_are_413() -> None:
    body = b'{"messages": [{"role": "user", "content": "' + b"a" * MAX_BODY_BYTES + b'"}]}'
    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    with keyed_client() as client:
        declared = client.post("/v1/chat/completions", content=body, headers=headers)
        chunked = client.post(
            "/v1/chat/completions",
            content=iter([body[i : i + 2**20] for i in range(0, len(body), 2**20)]),
            headers=headers,
        )
    for reply in (declared, chunked):
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
