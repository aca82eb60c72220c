"""The mode gate: a streaming parser from AutoThink model output to typed events.

    <judge> why </judge> <think_on> <think> steps </think> <answer> final </answer>
    <judge> why </judge> <think_off> <answer> final </answer>

The gate is pure (text in, events out, no I/O) and total: any input, however malformed, is parsed,
and every character that is not a recognised tag ends up in exactly one text segment. Its output
does not depend on how the input was chunked: a tag split across chunks is held back until it is
complete, and whitespace whose segment depends on what follows is held back until that is known.

Rules, in one place:
- Recognised tags are removed from the text; which tags are recognised is the profile's choice.
  Anything else that looks like a tag (`<foo>`, `<think` without `>`) is plain text.
- `<judge>`, `<think>`, `<answer>` open their segment; the closing tags return to "outside".
- Outside any segment, whitespace is a GAP (between blocks, never shown); other text is ANSWER
  (a model that answers without tags, text after `</think>` in think-family models, text after
  `</answer>`).
- Exactly one Decision is emitted per response, the first time the mode is known: a `<think_on>` /
  `<think_off>` tag; non-whitespace text inside `<think>` (on) or a think block closed or left with
  whitespace only (off); answer text or `<answer>` before any decision (off); end of stream (off).
  Later decision tags are dropped (the first decision wins).
- A decision settled by the text is the model's. The session settles it explicitly with
  `decide()` when the user forces a mode (think=on/off) or the judge threshold picks one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from katpilot.terms import Mode

# Who settled a response's think mode. "model": its judge's p(on) against the threshold, or the
# tags it wrote itself; "user": think=on/off forced it; "none": nobody, because the profile has no
# decision point (plain models answer as they always do) or the response ended before reaching it
# (the session reports that; the gate itself only ever sees the model or the user decide).
# The mode still says what happened ("off" when there is no think block).
DecidedBy = Literal["model", "user", "none"]
NO_DECISION: DecidedBy = "none"


class Segment(str, Enum):
    """Where a piece of text belongs."""

    JUDGE = "judge"
    THINK = "think"
    ANSWER = "answer"
    GAP = "gap"


@dataclass(frozen=True)
class Text:
    """A piece of text of one segment."""

    segment: Segment
    text: str


@dataclass(frozen=True)
class Decision:
    """The think / no-think decision, emitted once per response."""

    mode: Mode
    decided_by: DecidedBy
    p_on: float | None = None


@dataclass(frozen=True)
class End:
    """The stream is over; emitted by `close()`."""


Event = Text | Decision | End

JUDGE_OPEN, JUDGE_CLOSE = "<judge>", "</judge>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_ON, THINK_OFF = "<think_on>", "<think_off>"

# Every tag of every AutoThink family (the think family's are a subset): what `gguf_file` looks for
# in a vocabulary and `lsp.completion` cuts a completion at.
KAT_TAGS = frozenset({JUDGE_OPEN, JUDGE_CLOSE, THINK_ON, THINK_OFF, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE})
THINK_TAGS = frozenset({THINK_OPEN, THINK_CLOSE})
NO_TAGS: frozenset[str] = frozenset()

_OPENS = {JUDGE_OPEN: Segment.JUDGE, THINK_OPEN: Segment.THINK, ANSWER_OPEN: Segment.ANSWER}
_CLOSES = {JUDGE_CLOSE, THINK_CLOSE, ANSWER_CLOSE}
_DECISION_TAGS: dict[str, Mode] = {THINK_ON: "on", THINK_OFF: "off"}


class ModeGate:
    """Feed text with `feed`, finish with `close`; both return the events they produced."""

    def __init__(self, tags: frozenset[str] = KAT_TAGS) -> None:
        if any(">" in tag[:-1] or not (tag.startswith("<") and tag.endswith(">")) for tag in tags):
            raise ValueError("gate tags must look like <name> with a single '>' at the end")
        self.tags = tags
        self._prefixes = {tag[:i] for tag in tags for i in range(1, len(tag))}
        self._max_tag = max((len(tag) for tag in tags), default=0)
        self._tag_re = tag_pattern(tags)
        self.segment: Segment | None = None  # None: outside any block
        self.mode: Mode | None = None
        self.decided_by: DecidedBy | None = None
        self.judge_closed = False
        self._held = ""  # an incomplete tag at the end of the last chunk
        self._pending_ws = ""  # whitespace whose segment is not known yet
        self._think_undecided = False  # inside <think> before the decision is known
        self._answer_closed = False
        self._closed = False

    # -- public API -------------------------------------------------------------------------------

    @property
    def awaiting_decision(self) -> bool:
        """True right after `</judge>` while no decision was made: the KAT decision point."""
        return self.judge_closed and self.mode is None and self.segment is None

    @property
    def answer_closed(self) -> bool:
        """True once `</answer>` closed an answer block."""
        return self._answer_closed

    def decide(self, mode: Mode, decided_by: DecidedBy, p_on: float | None = None) -> list[Event]:
        """Settle the decision from outside the text (a forced mode, the judge threshold)."""
        out: list[Event] = []
        if self._think_undecided:
            self._think_undecided = False
            self._flush_ws(Segment.GAP, out)
        if self.mode is None:
            self.mode, self.decided_by = mode, decided_by
            out.append(Decision(mode, decided_by, p_on))
        return out

    def discard_held(self) -> str:
        """Drop and return an incomplete tag held at the end (the session replaces it with its own)."""
        held, self._held = self._held, ""
        return held

    def feed(self, text: str) -> list[Event]:
        """Parse the next chunk of text."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        out: list[Event] = []
        text = self._held + text
        self._held = ""
        end = len(text)
        if self.tags:
            # Hold back an incomplete tag at the very end; it may complete in the next chunk.
            lt = text.rfind("<", max(0, end - self._max_tag + 1))
            if lt >= 0 and text[lt:] in self._prefixes:
                self._held, end = text[lt:], lt
            pos = 0
            for match in self._tag_re.finditer(text, 0, end):
                if match.start() > pos:
                    self._emit_text(text[pos : match.start()], out)
                self._apply_tag(match.group(), out)
                pos = match.end()
            if pos < end:
                self._emit_text(text[pos:end], out)
        elif text:
            self._emit_text(text, out)
        return out

    def close(self) -> list[Event]:
        """End of stream: flush held text, settle the decision if nothing did, emit End."""
        if self._closed:
            return []
        out: list[Event] = []
        held, self._held = self._held, ""
        if held:
            self._emit_text(held, out)
        if self._pending_ws:
            if self._think_undecided:
                self._decide("off", out)
                self._think_undecided = False
            self._flush_ws(Segment.GAP, out)
        if self.mode is None:
            self._decide("off", out)
        self._closed = True
        out.append(End())
        return out

    # -- internals --------------------------------------------------------------------------------

    def _decide(self, mode: Mode, out: list[Event]) -> None:
        if self.mode is None:
            self.mode, self.decided_by = mode, "model"
            out.append(Decision(mode, "model"))

    def _flush_ws(self, segment: Segment, out: list[Event]) -> None:
        if self._pending_ws:
            out.append(Text(segment, self._pending_ws))
            self._pending_ws = ""

    def _emit_text(self, text: str, out: list[Event]) -> None:
        segment = self.segment
        if segment is None or self._think_undecided:
            # Whitespace here belongs to whatever comes next: hold it.
            stripped = text.lstrip()
            if not stripped:
                self._pending_ws += text
                return
            if self._think_undecided:
                self._think_undecided = False
                self._decide("on", out)
                segment = Segment.THINK
            else:
                self._decide("off", out)  # answer text before any decision: a direct answer
                segment = self.segment = Segment.ANSWER  # an implicit answer block
        if self._pending_ws:
            text = self._pending_ws + text
            self._pending_ws = ""
        if out and isinstance(out[-1], Text) and out[-1].segment is segment:
            out[-1] = Text(segment, out[-1].text + text)
        else:
            out.append(Text(segment, text))

    def _apply_tag(self, tag: str, out: list[Event]) -> None:
        if self._think_undecided:
            # A tag right after <think> and whitespace: the think block is empty.
            self._think_undecided = False
            self._decide("off", out)
        self._flush_ws(Segment.GAP, out)
        if tag in _DECISION_TAGS:
            self._decide(_DECISION_TAGS[tag], out)
            if self.segment is Segment.JUDGE:  # a decision ends an unclosed judge
                self.segment, self.judge_closed = None, True
        elif tag in _OPENS:
            self.segment = _OPENS[tag]
            if tag == ANSWER_OPEN:
                self._decide("off", out)
            elif tag == THINK_OPEN and self.mode is None:
                self._think_undecided = True
        elif tag in _CLOSES:
            if tag == JUDGE_CLOSE and self.segment is Segment.JUDGE:
                self.judge_closed = True
            elif tag == ANSWER_CLOSE and self.segment is Segment.ANSWER:
                self._answer_closed = True
            self.segment = None


def parse(text: str, tags: frozenset[str] = KAT_TAGS) -> list[Event]:
    """Parse a whole response at once."""
    gate = ModeGate(tags)
    return gate.feed(text) + gate.close()


def merge_texts(events: list[Event]) -> list[Event]:
    """Join adjacent Text events of the same segment: the chunking-independent form of a stream."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, Text) and merged and isinstance(merged[-1], Text) and merged[-1].segment is event.segment:
            merged[-1] = Text(event.segment, merged[-1].text + event.text)
        elif not isinstance(event, Text) or event.text:
            merged.append(event)
    return merged


# -- whole responses: the trainer writes and reads them ------------------------------------------


@dataclass(frozen=True)
class Parts:
    """An AutoThink response taken apart: what a training record stores."""

    judge: str
    mode: Mode
    think: str
    answer: str


def render_kat(parts: Parts) -> str:
    """The response in the AutoThink format, laid out as the kat profile's prefills write it.

    `split(render_kat(p)) == p` for parts that are stripped and hold no tag (`has_tag`); anything
    else is refused (ValueError), since a tag inside a part would change how the gate reads it.
    """
    for name in ("judge", "think", "answer"):
        text = getattr(parts, name)
        if text != text.strip() or has_tag(text):
            raise ValueError(f"the {name} must be stripped text without AutoThink tags")
    if parts.mode == "off" and parts.think:
        raise ValueError("a think-off response has no think text")
    judge = f"{JUDGE_OPEN}\n{parts.judge}\n{JUDGE_CLOSE}\n"
    answer = f"{ANSWER_OPEN}\n{parts.answer}\n{ANSWER_CLOSE}"
    if parts.mode == "on":
        return f"{judge}{THINK_ON}\n{THINK_OPEN}\n{parts.think}\n{THINK_CLOSE}\n{answer}"
    return f"{judge}{THINK_OFF}\n{answer}"


def split(text: str, tags: frozenset[str] = KAT_TAGS) -> Parts:
    """A whole response's judge, mode, think and answer as the gate reads them (each stripped)."""
    texts: dict[Segment, list[str]] = {s: [] for s in Segment}
    mode: Mode = "off"
    for event in parse(text, tags):
        if isinstance(event, Text):
            texts[event.segment].append(event.text)
        elif isinstance(event, Decision):
            mode = event.mode
    return Parts(
        judge="".join(texts[Segment.JUDGE]).strip(),
        mode=mode,
        think="".join(texts[Segment.THINK]).strip(),
        answer="".join(texts[Segment.ANSWER]).strip(),
    )


@functools.cache
def tag_pattern(tags: frozenset[str] = KAT_TAGS) -> re.Pattern[str]:
    """The pattern that finds the tags in a text, the one the parser uses (shared so that anything
    labelling a response's characters finds the tags exactly where the gate does)."""
    return re.compile("|".join(re.escape(tag) for tag in sorted(tags)))


def has_tag(text: str, tags: frozenset[str] = KAT_TAGS) -> bool:
    """Whether the text holds one of the tags (so it cannot sit inside a rendered part)."""
    return any(tag in text for tag in tags)


_WELL_FORMED = re.compile(
    r"<judge>(?P<judge>.*?)</judge>\s*"
    r"(?:<think_off>|<think_on>\s*<think>(?P<think>.*?)</think>)\s*"
    r"<answer>(?P<answer>.*?)</answer>",
    re.DOTALL,
)


def well_formed(text: str) -> bool:
    """Whether a whole response is the AutoThink format with nothing for the gate to repair: a judge,
    one decision tag, a think block exactly when it is on, an answer, each non-empty and free of
    tags, and nothing around them but whitespace (what the trainer's format reward and tests ask)."""
    found = _WELL_FORMED.fullmatch(text.strip())
    if found is None:
        return False
    parts = [p for p in found.group("judge", "think", "answer") if p is not None]
    return all(p.strip() and not has_tag(p) for p in parts)
