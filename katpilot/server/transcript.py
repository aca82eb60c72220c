"""Session events -> what an API client sees: content, reasoning, and katpilot's notes.

The session already splits the model's output by segment and never passes a tag through; this
sorts those segments into the OpenAI fields (think -> `reasoning_content`, answer -> `content`,
judge, decision and notices -> the `katpilot` note) and applies the request's stop sequences to
the answer. Streaming and non-streaming responses are both built from it, so they always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from katpilot.gate import Decision, Segment, Text
from katpilot.server.schemas import StreamNote
from katpilot.server.stop import StopMatcher
from katpilot.session import Finished, Notice, Response, SessionEvent


@dataclass(frozen=True)
class Piece:
    """One thing to stream: answer text, think text, or a note."""

    kind: Literal["content", "reasoning", "note"]
    text: str = ""
    note: StreamNote | None = None


class Transcript:
    """Accumulates one response as the client sees it."""

    def __init__(self, stops: list[str]) -> None:
        self._stop = StopMatcher(stops)
        self._content: list[str] = []
        self.response: Response | None = None

    @property
    def stopped(self) -> bool:
        """A stop sequence ended the answer: the generation should be cancelled."""
        return self._stop.hit

    def feed(self, event: SessionEvent) -> list[Piece]:
        if isinstance(event, Text):
            return self._text(event)
        if isinstance(event, Decision):
            return [Piece("note", note=StreamNote(mode=event.mode, decided_by=event.decided_by, p_on=event.p_on))]
        if isinstance(event, Notice):
            return [Piece("note", note=StreamNote(notice=event.text))]
        if isinstance(event, Finished):
            self.response = event.response
            return self._content_piece(self._stop.flush())
        return []

    def _text(self, event: Text) -> list[Piece]:
        if event.segment is Segment.ANSWER:
            return self._content_piece(self._stop.feed(event.text))
        if event.segment is Segment.THINK:
            return [Piece("reasoning", event.text)]
        if event.segment is Segment.JUDGE:
            return [Piece("note", note=StreamNote(judge=event.text))]
        return []  # GAP: whitespace between blocks, never shown

    def _content_piece(self, text: str) -> list[Piece]:
        if not text:
            return []
        self._content.append(text)
        return [Piece("content", text)]

    @property
    def content(self) -> str:
        """The answer: cut at the stop sequence if one matched, else the session's clean answer."""
        if self.stopped or self.response is None:
            return "".join(self._content)
        return self.response.answer


def merge_pieces(pieces: list[Piece]) -> list[Piece]:
    """Adjacent text pieces of one kind as one piece (a batch is sent as few chunks as it can be)."""
    merged: list[Piece] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if last is not None and piece.kind == last.kind and piece.kind != "note":
            merged[-1] = Piece(piece.kind, last.text + piece.text)
        else:
            merged.append(piece)
    return merged
