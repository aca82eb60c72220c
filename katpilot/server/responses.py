"""Response bodies and stream chunks for /v1/chat/completions and /v1/completions.

Both endpoints stream the same pieces (see transcript.py) in their own shape: a chat chunk carries
a `delta`, a completion chunk a `text`. A stream opens with the assistant role (chat), sends one
chunk per piece, ends with a chunk that has `finish_reason` and the full `katpilot` summary, then
(with `stream_options.include_usage`) a chunk with `usage` and no choices, as OpenAI does.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from katpilot import __version__
from katpilot.server import sse
from katpilot.server.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Completion,
    CompletionTokensDetails,
    Controls,
    Delta,
    KatpilotInfo,
    StreamNote,
    TextChoice,
    TokenCounts,
    Usage,
)
from katpilot.server.transcript import Piece, Transcript
from katpilot.session import Response

FINGERPRINT = f"katpilot-{__version__}"


@dataclass(frozen=True)
class Reply:
    """What every chunk of one response shares."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Reply:
        return cls(f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), model)


def finish_reason(response: Response, stopped: bool) -> Literal["stop", "length"]:
    """OpenAI's two outcomes: cut by a token limit (max_tokens or the context window), or not."""
    if not stopped and response.stats.finish_reason in ("length", "context"):
        return "length"
    return "stop"


def usage(response: Response) -> Usage:
    """Token counts; reasoning_tokens are the think segment's (the judge is in `katpilot.tokens`)."""
    stats = response.stats
    return Usage(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=stats.think_tokens),
    )


def katpilot_info(response: Response, controls: Controls) -> KatpilotInfo:
    stats = response.stats
    return KatpilotInfo(
        mode=response.mode,
        decided_by=response.decided_by,
        p_on=response.p_on,
        judge=response.judge,
        profile=response.profile,
        controls=controls,
        tokens=TokenCounts(
            judge=stats.judge_tokens, think=stats.think_tokens, answer=stats.answer_tokens, other=stats.other_tokens
        ),
        finish_reason=stats.finish_reason,
        notices=list(response.notices),
        tokens_per_s=round(stats.tokens_per_s, 2),
        time_to_first_token_s=stats.time_to_first_token_s,
    )


class Shape(Protocol):
    """How one endpoint writes a response and its stream chunks."""

    prefix: str

    def opening(self, reply: Reply) -> BaseModel | None: ...

    def piece(self, reply: Reply, piece: Piece) -> BaseModel: ...

    def closing(self, reply: Reply, transcript: Transcript, info: KatpilotInfo) -> BaseModel: ...

    def usage_chunk(self, reply: Reply, usage: Usage) -> BaseModel: ...

    def document(self, reply: Reply, transcript: Transcript, info: KatpilotInfo, usage: Usage) -> BaseModel: ...


def envelope(reply: Reply, usage: Usage | None, katpilot: KatpilotInfo | StreamNote | None) -> dict[str, Any]:
    """The fields every chat and text completion object and chunk carries besides its choices."""
    return {
        "id": reply.id,
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": FINGERPRINT,
        "usage": usage,
        "katpilot": katpilot,
    }


class ChatShape:
    prefix = "chatcmpl"

    def _chunk(
        self,
        reply: Reply,
        choices: list[ChunkChoice],
        usage: Usage | None = None,
        katpilot: KatpilotInfo | StreamNote | None = None,
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(choices=choices, **envelope(reply, usage, katpilot))

    def opening(self, reply: Reply) -> ChatCompletionChunk:
        return self._chunk(reply, [ChunkChoice(delta=Delta(role="assistant", content=""))])

    def piece(self, reply: Reply, piece: Piece) -> ChatCompletionChunk:
        if piece.kind == "content":
            return self._chunk(reply, [ChunkChoice(delta=Delta(content=piece.text))])
        if piece.kind == "reasoning":
            return self._chunk(reply, [ChunkChoice(delta=Delta(reasoning_content=piece.text))])
        return self._chunk(reply, [ChunkChoice(delta=Delta())], katpilot=piece.note)

    def closing(self, reply: Reply, transcript: Transcript, info: KatpilotInfo) -> ChatCompletionChunk:
        assert transcript.response is not None
        finish = finish_reason(transcript.response, transcript.stopped)
        return self._chunk(reply, [ChunkChoice(delta=Delta(), finish_reason=finish)], katpilot=info)

    def usage_chunk(self, reply: Reply, usage: Usage) -> ChatCompletionChunk:
        return self._chunk(reply, [], usage=usage)

    def document(self, reply: Reply, transcript: Transcript, info: KatpilotInfo, usage: Usage) -> ChatCompletion:
        response = transcript.response
        assert response is not None
        message = AssistantMessage(content=transcript.content, reasoning_content=response.think or None)
        choice = ChatChoice(message=message, finish_reason=finish_reason(response, transcript.stopped))
        return ChatCompletion(choices=[choice], **envelope(reply, usage, info))


class CompletionShape:
    prefix = "cmpl"

    def _chunk(
        self,
        reply: Reply,
        choices: list[TextChoice],
        usage: Usage | None = None,
        katpilot: KatpilotInfo | StreamNote | None = None,
    ) -> Completion:
        return Completion(choices=choices, **envelope(reply, usage, katpilot))

    def opening(self, reply: Reply) -> None:
        return None  # a text completion stream has no role chunk

    def piece(self, reply: Reply, piece: Piece) -> Completion:
        if piece.kind == "content":
            return self._chunk(reply, [TextChoice(text=piece.text)])
        if piece.kind == "reasoning":
            return self._chunk(reply, [TextChoice(text="", reasoning_content=piece.text)])
        return self._chunk(reply, [TextChoice(text="")], katpilot=piece.note)

    def closing(self, reply: Reply, transcript: Transcript, info: KatpilotInfo) -> Completion:
        assert transcript.response is not None
        finish = finish_reason(transcript.response, transcript.stopped)
        return self._chunk(reply, [TextChoice(text="", finish_reason=finish)], katpilot=info)

    def usage_chunk(self, reply: Reply, usage: Usage) -> Completion:
        return self._chunk(reply, [], usage=usage)

    def document(self, reply: Reply, transcript: Transcript, info: KatpilotInfo, usage: Usage) -> Completion:
        response = transcript.response
        assert response is not None
        choice = TextChoice(
            text=transcript.content,
            reasoning_content=response.think or None,
            finish_reason=finish_reason(response, transcript.stopped),
        )
        return self._chunk(reply, [choice], usage=usage, katpilot=info)


class StreamEncoder:
    """SSE bytes for a stream's text pieces, fast: one json.dumps per token.

    Each kind of text chunk is rendered once from the models above with a placeholder where the
    text goes, and split there; a piece is then head + JSON string + tail. Why it matters: when
    every core is decoding, each microsecond the event loop spends per token is taken from the
    model, and a stream sends one chunk per token (bench/server.py measures the difference).
    """

    _PLACEHOLDER = "\x00katpilot-text\x00"

    def __init__(self, shape: Shape, reply: Reply) -> None:
        self._shape = shape
        self._reply = reply
        marker = json.dumps(self._PLACEHOLDER).encode()
        self._parts: dict[str, tuple[bytes, bytes]] = {}
        for kind in ("content", "reasoning"):
            head, tail = sse.event(shape.piece(reply, Piece(kind, self._PLACEHOLDER))).split(marker)
            self._parts[kind] = (head, tail)

    def encode(self, piece: Piece) -> bytes:
        parts = self._parts.get(piece.kind)
        if parts is None:  # notes are rare: the model's own rendering
            return sse.event(self._shape.piece(self._reply, piece))
        return parts[0] + json.dumps(piece.text, ensure_ascii=False).encode() + parts[1]
