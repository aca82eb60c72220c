"""The mode gate: exact parses of well-formed and malformed streams, and chunking independence."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from katpilot import gate
from katpilot.gate import Decision, End, ModeGate, Segment, Text, merge_texts, parse


def texts(events: list[gate.Event], segment: Segment) -> str:
    return "".join(e.text for e in events if isinstance(e, Text) and e.segment is segment)


def decisions(events: list[gate.Event]) -> list[Decision]:
    return [e for e in events if isinstance(e, Decision)]


def test_kat_think_on_response() -> None:
    events = parse("<judge>\nneeds care\n</judge>\n<think_on>\n<think>\nstep 1\n</think>\n<answer>\n42\n</answer>")
    assert texts(events, Segment.JUDGE) == "\nneeds care\n"
    assert texts(events, Segment.THINK) == "\nstep 1\n"
    assert texts(events, Segment.ANSWER) == "\n42\n"
    assert decisions(events) == [Decision("on", "model")]
    assert isinstance(events[-1], End)


def test_kat_think_off_response() -> None:
    events = parse("<judge> easy </judge> <think_off> <answer> 4 </answer>")
    assert decisions(events) == [Decision("off", "model")]
    assert texts(events, Segment.THINK) == ""
    assert texts(events, Segment.ANSWER) == " 4 "
    assert texts(events, Segment.GAP) == "  "


def test_think_family_response_and_empty_think_block() -> None:
    events = parse("<think>\nhmm\n</think>\n\nThe answer.", gate.THINK_TAGS)
    assert decisions(events) == [Decision("on", "model")]
    assert texts(events, Segment.THINK) == "\nhmm\n"
    assert texts(events, Segment.ANSWER) == "\n\nThe answer."
    empty = parse("<think>\n\n</think>\n\nDirect.", gate.THINK_TAGS)
    assert decisions(empty) == [Decision("off", "model")]
    assert texts(empty, Segment.THINK) == ""
    assert texts(empty, Segment.ANSWER) == "\n\nDirect."


def test_plain_text_is_answer_and_unknown_tags_are_text() -> None:
    events = parse("use <div> and <thinking> here")
    assert texts(events, Segment.ANSWER) == "use <div> and <thinking> here"
    assert decisions(events) == [Decision("off", "model")]


def test_malformed_streams_keep_every_character() -> None:
    # unclosed judge, repeated decision, text after </answer>, tags out of order
    events = parse("<judge>why<think_off><think_on><answer>a</answer>tail</think><judge>j")
    assert decisions(events) == [Decision("off", "model")]
    assert texts(events, Segment.JUDGE) == "whyj"
    assert texts(events, Segment.ANSWER) == "atail"


def test_unclosed_tags_at_end_of_stream() -> None:
    events = parse("<judge>x</judge><think_on><think>still thinking <thi")
    assert texts(events, Segment.THINK) == "still thinking <thi"
    assert decisions(events) == [Decision("on", "model")]


def test_decide_from_outside_wins_over_later_tags() -> None:
    g = ModeGate()
    events = g.decide("off", "user") + g.feed("<think_on><think>x</think>") + g.close()
    assert decisions(events) == [Decision("off", "user")]
    assert texts(events, Segment.THINK) == "x"


def test_decision_point_and_answer_closed_flags() -> None:
    g = ModeGate()
    g.feed("<judge>a</jud")
    assert not g.awaiting_decision
    g.feed("ge>\n")
    assert g.awaiting_decision
    g.decide("on", "model", 0.7)
    assert not g.awaiting_decision
    g.feed("<think>t</think><answer>x</answer>")
    assert g.answer_closed


# -- property: chunking never changes the parse --------------------------------------------------

TAG_LIST = sorted(gate.KAT_TAGS)
pieces = st.one_of(
    st.sampled_from(TAG_LIST),
    st.sampled_from(["<", ">", "</", "<think", "<think_o", "</answer", "<judge ", " ", "\n", "\n\n"]),
    st.text(alphabet="ab <>/\n_onthik", max_size=12),
)


def strip_tags(text: str) -> str:
    return re.sub("|".join(map(re.escape, TAG_LIST)), "", text)


def chunked_parse(text: str, cuts: list[int], tags: frozenset[str] = gate.KAT_TAGS) -> list[gate.Event]:
    g = ModeGate(tags)
    events: list[gate.Event] = []
    start = 0
    for cut in [*sorted({c % (len(text) + 1) for c in cuts}), len(text)]:
        events += g.feed(text[start:cut])
        start = cut
    return events + g.close()


@settings(max_examples=400, deadline=None)
@given(st.lists(pieces, max_size=30), st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_chunking_does_not_change_events(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    whole = merge_texts(parse(text))
    chunked = merge_texts(chunked_parse(text, cuts))
    assert chunked == whole
    assert "".join(e.text for e in whole if isinstance(e, Text)) == strip_tags(text)
    assert len(decisions(whole)) == 1
    assert isinstance(whole[-1], End)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([gate.THINK_TAGS, gate.NO_TAGS]),
    st.lists(pieces, max_size=30),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_other_tag_sets_are_chunking_independent(tags: frozenset[str], parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    whole = merge_texts(parse(text, tags))
    assert merge_texts(chunked_parse(text, cuts, tags)) == whole
    pattern = "|".join(map(re.escape, sorted(tags)))
    assert "".join(e.text for e in whole if isinstance(e, Text)) == (re.sub(pattern, "", text) if tags else text)
    assert len(decisions(whole)) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(pieces, max_size=30))
def test_character_by_character_equals_whole(parts: list[str]) -> None:
    text = "".join(parts)
    assert merge_texts(chunked_parse(text, list(range(len(text))))) == merge_texts(parse(text))


# -- scripted token streams, as real models emit them, after the session's prefill ----------------

KAT_TOKENS = [
    "<",
    "judge",
    ">\n",
    "Multi",
    "-step",
    " proof",
    ".\n",
    "</",
    "judge",
    ">\n",
    "<think",
    "_on",
    ">\n",
    "<think>",
    "\n",
    "Step",
    " 1",
    ".\n",
    "</think>",
    "\n",
    "<answer>",
    "\n",
    "Q",
    "ED",
    "\n",
    "</answer>",
]
QWEN_TOKENS = ["<think>", "\n", "Let", " me", " see", ".\n", "</think>", "\n\n", "It", " is", " 4", "."]


def feed_tokens(g: ModeGate, tokens: list[str]) -> list[gate.Event]:
    events: list[gate.Event] = []
    for token in tokens:
        events += g.feed(token)
    return merge_texts(events + g.close())


def test_scripted_kat_stream_token_by_token() -> None:
    events = feed_tokens(ModeGate(gate.KAT_TAGS), KAT_TOKENS)
    assert decisions(events) == [Decision("on", "model")]
    assert texts(events, Segment.JUDGE).strip() == "Multi-step proof."
    assert texts(events, Segment.THINK).strip() == "Step 1."
    assert texts(events, Segment.ANSWER).strip() == "QED"


def test_scripted_think_family_stream_token_by_token() -> None:
    events = feed_tokens(ModeGate(gate.THINK_TAGS), QWEN_TOKENS)
    assert decisions(events) == [Decision("on", "model")]
    assert texts(events, Segment.THINK).strip() == "Let me see."
    assert texts(events, Segment.ANSWER).strip() == "It is 4."


def test_forced_think_on_gives_a_think_segment_on_every_profile() -> None:
    """think=on: the session decides for the user, prefills in the profile's format, the model goes on."""
    from katpilot.profiles import PROFILES

    for profile in PROFILES.values():
        g = ModeGate(profile.gate_tags("on"))
        events = g.decide("on", "user") + g.feed(profile.prefill("on"))
        events = events + feed_tokens(g, ["First", ",", " check", " inputs", ".", "</think>", "\n", "Done", "."])
        assert decisions(events) == [Decision("on", "user")], profile.name
        assert "First, check inputs." in texts(events, Segment.THINK), profile.name
        assert "<" not in texts(events, Segment.THINK) + texts(events, Segment.ANSWER), profile.name


def test_forced_think_off_on_a_model_that_wants_to_think() -> None:
    g = ModeGate(gate.KAT_TAGS)
    events = g.decide("off", "user") + g.feed("<think_off>\n<answer>\n") + feed_tokens(g, ["Four", ".", "</answer>"])
    assert decisions(events) == [Decision("off", "user")]
    assert texts(events, Segment.ANSWER).strip() == "Four."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<judge>\neasy\n</judge>\n<think_off>\n<answer>\n4\n</answer>", True),
        ("<judge>hard</judge><think_on><think>2+2 is 4</think><answer>4</answer>\n", True),
        ("<judge>easy</judge><think_off><answer>4</answer> and more", False),  # text after the answer
        ("<judge>easy</judge><answer>4</answer>", False),  # no decision tag: the gate decides "off" itself
        ("<judge>hard</judge><think_on><answer>4</answer>", False),  # on, but no think block
        ("<judge>easy</judge><think_off><think>x</think><answer>4</answer>", False),  # off with thinking
        ("<judge></judge><think_off><answer>4</answer>", False),  # an empty judge
        ("<judge>easy</judge><think_off><answer>4", False),  # the answer never closes
        ("<judge>a <think_on> b</judge><think_off><answer>4</answer>", False),  # a tag inside the judge
        ("4", False),
    ],
)
def test_well_formed_means_nothing_to_repair(text: str, expected: bool) -> None:
    assert gate.well_formed(text) is expected
