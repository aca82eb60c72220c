"""A rollout's tokens, each labelled with the AutoThink segment it belongs to, as serving's gate reads it.

Step-SRPO rewards the mode decision and the answer separately, so every completion token must be
known to be part of the judge, the mode tag, the thinking or the answer. The text is parsed by
`katpilot.gate` (the code that serves, `kat` tags), never by a second parser: the gate's events
give each character that is not a tag its segment, in order, and the tags found where the gate
finds them (the same pattern, left to right) fill in the rest. A token takes the label of its
first character; a token with no text of its own (a byte of an unfinished character) takes the
label of the next one.

Labels: `judge` (the judge block and anything before the decision), `mode` (the characters of the
first decision tag, `<think_on>` or `<think_off>`), `think`, `answer` (the answer block and
anything after it, the end-of-turn token included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from katpilot import gate
from katpilot.terms import Mode

Label = Literal["judge", "mode", "think", "answer"]

_TAG_LABEL: dict[str, Label] = {
    gate.JUDGE_OPEN: "judge",
    gate.JUDGE_CLOSE: "judge",
    gate.THINK_OPEN: "think",
    gate.THINK_CLOSE: "think",
    gate.ANSWER_OPEN: "answer",
    gate.ANSWER_CLOSE: "answer",
}
_SEGMENT_LABEL: dict[gate.Segment, Label] = {
    gate.Segment.JUDGE: "judge",
    gate.Segment.THINK: "think",
    gate.Segment.ANSWER: "answer",
}


@dataclass(frozen=True)
class TokenSegments:
    """One completion, taken apart token by token."""

    labels: list[Label]  # one per token
    parts: gate.Parts  # judge, mode, think and answer text, as `gate.split` gives them
    well_formed: bool  # `gate.well_formed`: nothing for the gate to repair
    mode_by_tag: bool  # the decision was a `<think_on>`/`<think_off>` tag the model wrote

    @property
    def mode(self) -> Mode:
        return self.parts.mode

    def count(self, label: Label) -> int:
        return sum(1 for x in self.labels if x == label)


def char_labels(text: str) -> tuple[list[Label], bool]:
    """(a label per character, whether the decision was a tag the model wrote before any thinking or
    answer), from the gate's parse of `text`."""
    labels: list[Label | None] = [None] * len(text)
    mode_at: int | None = None
    for found in gate.tag_pattern().finditer(text):
        tag = found.group()
        if tag in (gate.THINK_ON, gate.THINK_OFF) and mode_at is None:
            label: Label = "mode"
            mode_at = found.start()
        else:
            label = _TAG_LABEL.get(tag, "answer")  # a later decision tag: the gate drops it
        labels[found.start() : found.end()] = [label] * (found.end() - found.start())
    gaps: list[int] = []
    position = 0
    for event in gate.parse(text):  # the non-tag characters, in order, are exactly the events' texts
        if not isinstance(event, gate.Text):
            continue
        for _ in event.text:
            while labels[position] is not None:
                position += 1
            if event.segment is gate.Segment.GAP:
                gaps.append(position)
                labels[position] = "judge"  # settled below
            else:
                labels[position] = _SEGMENT_LABEL[event.segment]
            position += 1
    filled: list[Label] = [x if x is not None else "answer" for x in labels]
    gap_set = set(gaps)
    first_past_judge = next((i for i, x in enumerate(filled) if x != "judge" and i not in gap_set), len(filled))
    for i in gaps:  # whitespace between blocks: the judge side before the decision, the answer side after
        filled[i] = "judge" if i < first_past_judge else "answer"
    by_tag = mode_at is not None and first_past_judge == mode_at
    return filled, by_tag


def token_segments(token_texts: Sequence[str]) -> TokenSegments:
    """Labels for a completion given as the text each of its tokens adds (see `token_texts`)."""
    text = "".join(token_texts)
    chars, by_tag = char_labels(text)
    labels: list[Label | None] = []
    offset = 0
    for piece in token_texts:
        labels.append(chars[offset] if piece else None)
        offset += len(piece)
    following: Label = "answer"
    for i in range(len(labels) - 1, -1, -1):  # text-less tokens take the next token's label
        if labels[i] is None:
            labels[i] = following
        else:
            following = labels[i]  # type: ignore[assignment]
    return TokenSegments(
        labels=[x for x in labels if x is not None],
        parts=gate.split(text),
        well_formed=gate.well_formed(text),
        mode_by_tag=by_tag,
    )


def token_texts(tokenizer: object, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded completion (special tokens shown, as the engine shows
    them to the gate): the difference between decoding the ids up to it and up to the one before, so
    tokenizers that treat a leading space specially cut the text as the whole decode does. Tokens that
    end inside a multi-byte character add nothing; the token that completes it adds the character."""
    decode = tokenizer.decode  # type: ignore[attr-defined]
    pieces: list[str] = []
    done = ""
    for end in range(1, len(ids) + 1):
        text: str = decode(list(ids[:end]), skip_special_tokens=False)
        if (text.endswith("\ufffd") and end < len(ids)) or not text.startswith(done):
            pieces.append("")  # an unfinished character: its bytes wait for the rest
            continue
        pieces.append(text[len(done) :])
        done = text
    return pieces
