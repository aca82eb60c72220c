"""A burst against a real server: 50 concurrent streaming requests, a queue of 8.

Every request must end one of two ways: a complete answer (a finish_reason, then [DONE]) or an
immediate 429 with Retry-After. The server must stay up, count what it refused, and serve the next
request after the burst.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from server_helpers import Server, running_server

BURST = 50
QUEUE = 8
MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("home"), "--queue", str(QUEUE), "--max-tokens", "12") as srv:
        yield srv


def one_stream(client: openai.OpenAI, start: threading.Barrier) -> str:
    """'complete' or '429'; anything else fails the test."""
    start.wait()
    try:
        stream = client.chat.completions.create(model="smollm2-135m", messages=MESSAGES, stream=True, temperature=0)
        chunks = list(stream)
    except openai.RateLimitError as exc:
        assert exc.response.headers["Retry-After"].isdigit()
        assert exc.body["code"] == "queue_full"  # type: ignore[index]
        return "429"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1, chunks
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return "complete"


def test_burst_gets_answers_or_429_and_the_server_stays_up(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)
    start = threading.Barrier(BURST)
    with ThreadPoolExecutor(BURST) as pool:
        outcomes = list(pool.map(lambda _: one_stream(client, start), range(BURST)))
    complete, refused = outcomes.count("complete"), outcomes.count("429")
    assert complete + refused == BURST
    assert complete >= QUEUE and refused > 0  # the queue filled, and what it held was served
    health = httpx.get(server.base_url + "/health").json()
    assert server.process.poll() is None
    assert health["rejected"] == refused and health["queue"]["in_flight"] == 0
    after = client.chat.completions.create(model="smollm2-135m", messages=MESSAGES, max_tokens=4)
    assert after.choices[0].message.content


def test_waiting_requests_are_served_in_turn(server: Server, tmp_path: Path) -> None:
    """Exactly the queue's worth of simultaneous non-streaming requests: all are served, none refused."""
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)
    before = httpx.get(server.base_url + "/health").json()["rejected"]
    start = threading.Barrier(QUEUE)

    def ask(_: int) -> str:
        start.wait()
        return (
            client.chat.completions.create(model="smollm2-135m", messages=MESSAGES, max_tokens=6)
            .choices[0]
            .finish_reason
        )

    with ThreadPoolExecutor(QUEUE) as pool:
        assert all(reason in ("stop", "length") for reason in pool.map(ask, range(QUEUE)))
    assert httpx.get(server.base_url + "/health").json()["rejected"] == before
