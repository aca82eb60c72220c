"""Reading a streamed `/v1/completions` answer: server-sent events in, (text, finish_reason) out.

The client side of the wire format that `katpilot/server/sse.py` writes (`data: {json}` per chunk,
then `data: [DONE]`). The two share no code: the server encodes pydantic chunks for Starlette, this
decodes any OpenAI-compatible server's bytes, and the engine must not import a front end.
Every way a stream can go wrong (silence, a cut connection, an error event, not an event stream at
all) becomes one EngineError that says which.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Protocol

from katpilot.engine.http_client import not_openai, reason, server_message
from katpilot.errors import EngineError

DONE = b"[DONE]"


class Lines(Protocol):
    """What is read: an `http.client.HTTPResponse` (or any byte stream read line by line)."""

    def readline(self, limit: int = -1, /) -> bytes: ...


def sse_choices(resp: Lines, url: str) -> Iterator[tuple[str, str | None]]:
    """(text, finish_reason) of each server-sent event of a streamed completion, until `[DONE]`.

    `url` is the server's base, for messages. Comments (`:` lines) and non-data fields are skipped.
    """
    saw_event = False
    while True:
        try:
            line = resp.readline()
        except TimeoutError:  # socket.timeout is an alias since 3.10
            raise EngineError(
                f"the model server at {url} stopped sending tokens", "check the server; raise its timeout if it is slow"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(
                f"the model server at {url} closed the stream mid-answer: {reason(exc)}",
                "retry; check the server's log",
            ) from None
        if not line:
            if not saw_event:
                raise not_openai(url, "POST /v1/completions returned no event stream")
            raise EngineError(
                f"the model server at {url} closed the stream mid-answer", "retry; check the server's log"
            )
        line = line.strip()
        if not line or line.startswith(b":") or not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == DONE:
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise not_openai(url, "a streamed event is not JSON") from None
        if isinstance(event, dict) and "error" in event:
            raise EngineError(
                f"the model server at {url} failed mid-answer: {server_message(event)}", "check the server's log"
            )
        try:
            choice = event["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise not_openai(url, "a streamed event is not a completion chunk") from None
        if not isinstance(choice, dict):
            raise not_openai(url, "a streamed event's choice is not an object")
        text, finish = choice.get("text"), choice.get("finish_reason")
        if not isinstance(text, str | None):
            raise not_openai(url, "a streamed event's text is not a string")
        if not isinstance(finish, str | None):
            raise not_openai(url, "a streamed event's finish_reason is not a string")
        saw_event = True
        yield text or "", finish
