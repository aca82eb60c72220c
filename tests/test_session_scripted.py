"""Session paths that need a real AutoThink model's output, driven by scripted token streams.

The embedded SmolLM2 never writes KAT tags, so the paths that react to them (a tag split across
tokens at the decision point, `</answer>` ending the response, a judge that never closes, an
engine without probabilities) are exercised here with an engine that replays a script on purpose
(`scripted.ScriptedEngine`).
Everything else in the session is tested on the real model in test_session.py.
"""

from __future__ import annotations

import pytest
from scripted import ScriptedEngine

from katpilot.chat_template import Message
from katpilot.config import load_settings
from katpilot.engine.base import SamplingParams
from katpilot.errors import KatpilotError
from katpilot.gate import Decision, Segment, Text
from katpilot.models import new_session, sampling_params, think_controls
from katpilot.profiles import JUDGE_MAX_TOKENS, KAT, PLAIN, THINK
from katpilot.session import NO_DECISION, ChatSession, Completed, Notice, ThinkControls


def run(engine: ScriptedEngine, controls: ThinkControls | None = None):
    session = ChatSession(engine, KAT, None, SamplingParams(max_tokens=200))
    events = list(session.send("question", controls or ThinkControls()))
    return events, events[-1].response


def test_decision_point_with_a_tag_split_across_tokens() -> None:
    engine = ScriptedEngine(["easy", "</", "jud", "ge", "><", "think", "_off", ">", "4", "</answer>"])
    _, response = run(engine, ThinkControls(threshold=0.5))
    assert response.mode == "on" and response.decided_by == "model"
    assert abs(response.p_on - 1 / (1 + 2.718281828459045**-1)) < 1e-9
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
    engine = ScriptedEngine(
        ["ok", "</judge>", "\n", " ", "\n", "<think_off>", "<answer>", "fine", "</answer>"], logprobs=None
    )
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


# -- the raw path: a prompt that is not a chat (fill-in-the-middle) ----------------------------------


def raw(session: ChatSession, prompt: str, **kwargs):
    """The pieces and the final `Completed` of `session.complete`."""
    *pieces, done = session.complete(prompt, **kwargs)
    assert isinstance(done, Completed) and all(isinstance(piece, str) for piece in pieces)
    return pieces, done


def test_complete_sends_the_prompt_as_it_is_and_counts_every_token() -> None:
    engine = ScriptedEngine(["<think>", "x", " * ", "2", "</answer>"])
    session = ChatSession(engine, KAT, "system", SamplingParams(max_tokens=50))
    pieces, done = raw(session, "<PRE>def f(x):\n    return <SUF><MID>")
    assert engine.prompts == ["<PRE>def f(x):\n    return <SUF><MID>"]  # no template, no prefill
    assert pieces == ["<think>", "x", " * ", "2", "</answer>"] and done.text == "".join(pieces)  # no gate
    assert (done.stats.completion_tokens, done.stats.answer_tokens, done.stats.finish_reason) == (5, 5, "stop")
    assert done.stats.time_to_first_token_s is not None and done.stats.total_s >= done.stats.time_to_first_token_s
    assert session.history == [] and engine.scored == []


def test_complete_reports_length_and_takes_sampling_per_call() -> None:
    engine = ScriptedEngine(["a", "b", "c", "d"])
    session = ChatSession(engine, PLAIN, None, SamplingParams(max_tokens=50))
    _, done = raw(session, "p", sampling=SamplingParams(max_tokens=2))
    assert (done.text, done.stats.completion_tokens, done.stats.finish_reason) == ("ab", 2, "length")


def test_complete_stops_where_the_caller_says_and_still_finishes() -> None:
    engine = ScriptedEngine(["one", "\n", "two", "\n", "three"])
    session = ChatSession(engine, PLAIN, None, SamplingParams(max_tokens=50))
    _, done = raw(session, "p", stop=lambda text: text.count("\n") >= 2)
    assert done.text == "one\ntwo\n" and done.stats.finish_reason == "stop" and done.stats.completion_tokens == 4
    assert engine.pieces == ["three"]  # never read: the stream was closed


def test_complete_closed_early_closes_the_engine_stream() -> None:
    engine = ScriptedEngine(["a", "b", "c"])
    items = ChatSession(engine, PLAIN).complete("p")
    assert next(items) == "a"
    items.close()
    assert engine.pieces == ["b", "c"]


# -- models: the options front ends give instead of setting them on a session ------------------------


def test_new_session_takes_system_prompt_history_and_sampling() -> None:
    settings = load_settings({"profile": "plain", "system_prompt": "configured"}).settings
    engine = ScriptedEngine(["4"] * 10)
    history = [Message("user", "earlier"), Message("assistant", "answer")]
    session = new_session(
        engine, settings, system_prompt="from the request", history=history, sampling=SamplingParams(max_tokens=3)
    )
    response = session.ask("question", ThinkControls(think="off"))
    assert "from the request" in engine.prompts[0] and "configured" not in engine.prompts[0]
    assert "earlier" in engine.prompts[0] and "answer" in engine.prompts[0]
    assert response.stats.completion_tokens == 3  # the given sampling, not the configured one
    assert history == [Message("user", "earlier"), Message("assistant", "answer")]  # copied, not shared
    assert len(session.history) == 4
    session.clear()
    assert session.history == []


def test_new_session_defaults_to_the_configuration() -> None:
    settings = load_settings({"profile": "plain", "system_prompt": "configured", "max_tokens": 7}).settings
    session = new_session(ScriptedEngine([]), settings)
    assert (session.system_prompt, session.sampling, session.history) == ("configured", sampling_params(settings), [])


def test_think_controls_take_overrides_by_the_config_rules() -> None:
    settings = load_settings({"think": "on", "budget": 100, "threshold": 0.7}).settings
    assert think_controls(settings) == ThinkControls("on", 100, 0.7)
    assert think_controls(settings, "off") == ThinkControls("off", 100, 0.7)
    assert think_controls(settings, budget=None) == ThinkControls("on", None, 0.7)
    assert think_controls(settings, "auto", budget="256", threshold="0.3") == ThinkControls("auto", 256, 0.3)
    with pytest.raises(KatpilotError, match="think"):
        think_controls(settings, "sometimes")
