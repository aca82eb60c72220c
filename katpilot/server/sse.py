"""Server-sent events as OpenAI streams them: `data: {json}` per chunk, then `data: [DONE]`.

`EventStream` is Starlette's StreamingResponse (which stops iterating when the client
disconnects) plus one guarantee: `on_close` runs however the response ends - finished, client
gone, or never iterated - so the generation is cancelled and the queue slot never leaks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of tokens


def event(chunk: BaseModel) -> bytes:
    return b"data: " + chunk.model_dump_json().encode() + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An error after the stream started: the status is already 200, so it travels as data."""
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class EventStream(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(events, headers=HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
