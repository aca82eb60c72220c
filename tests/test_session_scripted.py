"""Session paths that need a real AutoThink model's output, driven by scripted token streams.

The embedded SmolLM2 never writes KAT tags, so the paths that react to them (a tag split across
tokens at the decision point, `</answer>` ending the response, a judge that never closes, an
engine without probabilities) are exercised here with an engine that replays a script on purpose.
Everything else in the session is tested on the real model in test_session.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from katpilot.engine.base import Engine, ModelInfo, SamplingParams, StreamStats
from katpilot.gate import Decision, Segment, Text
from katpilot.profiles import JUDGE_MAX_TOKENS, KAT, PLAIN, THINK
from katpilot.session import NO_DECISION, ChatSession, Notice, ThinkControls

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ScriptedEngine(Engine):
    """Replays token pieces across calls; scores decisions with fixed log-probabilities (or none)."""

    def __init__(self, pieces: list[str], logprobs: tuple[float, float] | None = (-1.0, -2.0)) -> None:
        self.pieces = list(pieces)
        self.logprobs = logprobs
        self.prompts: list[str] = []
        self.scored: list[str] = []
        self.info = ModelInfo("scripted", None, "test", CHATML, "", "<|im_end|>", 4096)

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def stream(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None, stats: StreamStats | None = None
    ) -> Iterator[str]:
        stats = stats if stats is not None else StreamStats()
        self.prompts.append(prompt)
        while self.pieces and stats.generated_tokens < params.max_tokens:
            stats.generated_tokens += 1
            yield self.pieces.pop(0)
        stats.finish_reason = "stop" if not self.pieces else "length"

    def continuation_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float] | None:
        self.scored.append(prompt)
        return None if self.logprobs is None else [self.logprobs[0]] + [self.logprobs[1]] * (len(continuations) - 1)


def run(engine: ScriptedEngine, controls: ThinkControls | None = None):
    session = ChatSession(engine, KAT, None, SamplingParams(max_tokens=200))
    events = list(session.send("question", controls or ThinkControls()))
    return events, events[-1].response


def test_decision_point_with_a_tag_split_across_tokens() -> None:
    engine = ScriptedEngine(["easy", "</", "jud", "ge", "><", "think", "_off", ">", "4", "</answer>"])
    events, response = run(engine, ThinkControls(threshold=0.5))
    assert response.mode == "on" and response.decided_by == "model"
    assert abs(response.p_on - 1 / (1 + 2.718281828459045 ** -1)) < 1e-9
    assert engine.scored[0].endswith("</judge>")  # the half-written "<" was not scored
    assert "<" not in response.answer + response.think
    assert engine.prompts[-1].endswith("</judge>\n<think_on>\n<think>\n")


def test_answer_close_ends_the_response() -> None:
    engine = ScriptedEngine(["<judge>", "simple", "</judge>", "\n", "more", "</answer>", "junk", "after"])
    _, response = run(engine, ThinkControls(think="off"))
    assert response.answer == "more"
    assert engine.pieces == ["junk", "after"]  # never read


def test_judge_that_never_closes_is_cut() -> None:
    engine = ScriptedEngine(["blah "] * (JUDGE_MAX_TOKENS + 50))
    events, response = run(engine, ThinkControls(threshold=0.0))
    assert response.stats.judge_tokens == JUDGE_MAX_TOKENS
    assert any(isinstance(e, Notice) and "past" in e.text for e in events)
    assert response.mode == "on" and response.p_on is not None


def test_engine_without_probabilities_lets_the_model_decide_once() -> None:
    engine = ScriptedEngine(["ok", "</judge>", "\n", " ", "\n", "<think_off>", "<answer>", "fine", "</answer>"], logprobs=None)
    events, response = run(engine)
    notices = [e for e in events if isinstance(e, Notice) and "p(on)" in e.text]
    assert len(notices) == 1
    assert (response.mode, response.decided_by, response.p_on) == ("off", "model", None)
    assert response.answer == "fine"


def test_budget_closes_a_kat_think_block() -> None:
    engine = ScriptedEngine(["t"] * 30 + ["answer text"])
    events, response = run(engine, ThinkControls(think="on", budget=5))
    assert response.stats.think_tokens == 5
    assert engine.prompts[1].endswith("\n</think>\n<answer>\n")
    assert response.answer == "t" * 25 + "answer text"  # what the model wrote after the close
    assert [e for e in events if isinstance(e, Text) and e.segment is Segment.THINK]


# -- who decided: nobody, when there is no decision point or it is never reached ---------------------


def test_a_plain_model_decides_nothing() -> None:
    """A plain profile has no decision point: the answer is think-off, and no one chose that."""
    engine = ScriptedEngine(["The", " answer", " is 4."])
    session = ChatSession(engine, PLAIN, None, SamplingParams(max_tokens=50))
    events = list(session.send("question", ThinkControls(think="auto")))
    response = events[-1].response
    assert (response.mode, response.decided_by, response.p_on) == ("off", NO_DECISION, None)
    assert [(d.mode, d.decided_by) for d in events if isinstance(d, Decision)] == [("off", NO_DECISION)]
    assert engine.scored == []  # nothing was scored either


def test_forced_modes_on_a_plain_model_are_the_users() -> None:
    for think in ("on", "off"):
        session = ChatSession(ScriptedEngine(["fine"]), PLAIN, None, SamplingParams(max_tokens=50))
        assert session.ask("question", ThinkControls(think=think)).decided_by == "user"


def test_a_kat_response_cut_inside_the_judge_decides_nothing() -> None:
    """max_tokens runs out before </judge>: the decision point was never reached."""
    engine = ScriptedEngine(["still", " judging", " this", " one"])
    session = ChatSession(engine, KAT, None, SamplingParams(max_tokens=3))
    response = session.ask("question", ThinkControls(think="auto"))
    assert response.stats.finish_reason == "length"
    assert (response.mode, response.decided_by, response.p_on) == ("off", NO_DECISION, None)
    assert response.judge == "still judging this" and response.answer == ""


def test_a_think_model_cut_before_its_first_word_decides_nothing() -> None:
    """An engine without p(on) leaves the think decision to the text; no text, no decision."""
    engine = ScriptedEngine([], logprobs=None)
    session = ChatSession(engine, THINK, None, SamplingParams(max_tokens=0))
    response = session.ask("question", ThinkControls(think="auto"))
    assert (response.mode, response.decided_by) == ("off", NO_DECISION)


def test_the_kat_decision_stays_the_models() -> None:
    engine = ScriptedEngine(["easy", "</judge>", "4", "</answer>"])
    response = ChatSession(engine, KAT, None, SamplingParams(max_tokens=50)).ask("q", ThinkControls(threshold=0.99))
    assert (response.mode, response.decided_by) == ("off", "model") and response.p_on is not None
