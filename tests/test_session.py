"""The session on the real embedded model: think controls, p(on), budgets, history, trimming."""

from __future__ import annotations

import threading

import pytest

from katpilot.chat_template import Message
from katpilot.engine.base import SamplingParams, StreamStats
from katpilot.engine.local import LocalEngine
from katpilot.gate import Decision, Segment, Text
from katpilot.profiles import KAT, PLAIN, PROFILES, THINK
from katpilot.session import NO_DECISION, ChatSession, Completed, Finished, Notice, ThinkControls

GREEDY = SamplingParams(temperature=0.0, max_tokens=60)


def session(engine: LocalEngine, profile=PLAIN, max_tokens: int = 60) -> ChatSession:
    return ChatSession(
        engine, profile, "You are a helpful assistant.", SamplingParams(temperature=0.0, max_tokens=max_tokens)
    )


def test_think_off_is_decided_by_the_user(engine: LocalEngine) -> None:
    response = session(engine).ask("What is 2+2?", ThinkControls(think="off"))
    assert response.mode == "off" and response.decided_by == "user"
    assert response.answer and response.think == ""


def test_a_plain_model_in_auto_mode_is_not_said_to_decide(engine: LocalEngine) -> None:
    """The embedded SmolLM2 is plain: no decision point, so nobody decided its think-off answer."""
    events = list(session(engine, max_tokens=10).send("What is 2+2?", ThinkControls(think="auto")))
    response = events[-1].response
    assert response.answer and response.think == ""
    assert (response.mode, response.decided_by, response.p_on) == ("off", NO_DECISION, None)
    assert [(e.mode, e.decided_by) for e in events if isinstance(e, Decision)] == [("off", NO_DECISION)]
    assert response.to_dict()["decided_by"] == "none"  # what --json prints


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_think_on_produces_thinking_on_every_profile(engine: LocalEngine, name: str) -> None:
    response = session(engine, PROFILES[name], max_tokens=40).ask("Why is the sky blue?", ThinkControls(think="on"))
    assert response.mode == "on" and response.decided_by == "user"
    assert response.think.strip(), f"no think segment on profile {name}"
    assert "<think" not in response.think and "<answer>" not in response.answer


def test_p_on_is_a_real_deterministic_probability(engine: LocalEngine) -> None:
    results = {}
    for threshold in (0.0, 1.0, 0.0):
        r = session(engine, KAT, max_tokens=80).ask("What is 2+2?", ThinkControls(think="auto", threshold=threshold))
        results.setdefault(threshold, []).append(r)
    on, off = results[0.0][0], results[1.0][0]
    assert on.p_on is not None and 0.0 < on.p_on < 1.0
    assert on.p_on == off.p_on == results[0.0][1].p_on  # same prompt, same value
    assert (on.mode, on.decided_by) == ("on", "model")
    assert (off.mode, off.decided_by) == ("off", "model")
    assert on.judge  # the judge ran before the decision point


def test_think_profile_auto_scores_closing_the_block(engine: LocalEngine) -> None:
    on = session(engine, THINK, max_tokens=20).ask("Hello", ThinkControls(threshold=0.0))
    off = session(engine, THINK, max_tokens=20).ask("Hello", ThinkControls(threshold=1.0))
    assert on.p_on is not None and 0.0 < on.p_on < 1.0 and on.p_on == off.p_on
    assert on.mode == "on" and off.mode == "off" and off.think == ""


def test_think_budget_closes_the_block_and_answers(engine: LocalEngine) -> None:
    events = list(session(engine, THINK, max_tokens=60).send("Explain recursion.", ThinkControls(think="on", budget=8)))
    response = events[-1].response
    assert any(isinstance(e, Notice) and "budget of 8" in e.text for e in events)
    assert response.stats.think_tokens <= 9
    assert response.stats.answer_tokens > 0


def test_event_stream_shape(engine: LocalEngine) -> None:
    events = list(session(engine, KAT, max_tokens=80).send("What is 2+2?", ThinkControls(threshold=0.0)))
    assert isinstance(events[-1], Finished)
    assert [type(e) for e in events].count(Decision) == 1
    judge_at = next(i for i, e in enumerate(events) if isinstance(e, Text) and e.segment is Segment.JUDGE)
    decision_at = next(i for i, e in enumerate(events) if isinstance(e, Decision))
    assert judge_at < decision_at
    stats = events[-1].response.stats
    total = stats.judge_tokens + stats.think_tokens + stats.answer_tokens + stats.other_tokens
    assert total == stats.completion_tokens > 0
    assert stats.time_to_first_token_s is not None and stats.tokens_per_s > 0


def test_second_turn_reuses_the_first_turns_prompt(engine: LocalEngine) -> None:
    chat = session(engine)
    first = chat.ask("My name is Ada. Remember it.", ThinkControls(think="off"))
    second = chat.ask("What is my name?", ThinkControls(think="off"))
    assert second.stats.reused_prompt_tokens >= first.stats.prompt_tokens - 2
    assert len(chat.history) == 4


def test_old_turns_are_trimmed_to_fit_the_context(model_path) -> None:
    small = LocalEngine(model_path, n_ctx=512, n_threads=2)
    try:
        chat = ChatSession(small, PLAIN, None, SamplingParams(temperature=0.0, max_tokens=100))
        for i in range(6):
            chat.history += [Message("user", f"question {i} " + "blah " * 40), Message("assistant", "ok " * 20)]
        events = list(chat.send("And now?", ThinkControls(think="off")))
        notices = [e.text for e in events if isinstance(e, Notice)]
        assert any("oldest turn" in n for n in notices)
        assert events[-1].response.answer
    finally:
        small.close()


def test_cancel_keeps_what_was_streamed(engine: LocalEngine) -> None:
    import threading

    cancel = threading.Event()
    answer = []
    chat = session(engine, max_tokens=200)
    for event in chat.send("Write a poem about the sea.", ThinkControls(think="off"), cancel):
        if isinstance(event, Text) and event.segment is Segment.ANSWER:
            answer.append(event.text)
            if len(answer) == 3:
                cancel.set()
        if isinstance(event, Finished):
            response = event.response
    assert response.stats.finish_reason == "cancelled"
    assert response.answer.startswith("".join(answer).strip()[:5])
    assert response.stats.completion_tokens <= 4


# -- the raw path (fill-in-the-middle prompts are not chats) -----------------------------------------

RAW_PROMPT = "def square(x):\n    return"


def test_complete_is_the_engines_own_text_with_stats(engine: LocalEngine) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=12)
    direct = StreamStats()
    expected = "".join(engine.stream(RAW_PROMPT, params, None, direct))
    items = list(ChatSession(engine, PLAIN, "a system prompt the raw path ignores", params).complete(RAW_PROMPT))
    done = items[-1]
    assert isinstance(done, Completed) and done.text == "".join(items[:-1]) == expected
    stats = done.stats
    assert (stats.completion_tokens, stats.finish_reason) == (direct.generated_tokens, direct.finish_reason)
    assert stats.finish_reason in ("stop", "length") and stats.completion_tokens == stats.answer_tokens > 0
    if stats.finish_reason == "length":
        assert stats.completion_tokens == 12
    assert stats.prompt_tokens == engine.count_tokens(RAW_PROMPT) and stats.time_to_first_token_s is not None


def test_complete_stopped_by_the_caller_or_cancelled(engine: LocalEngine) -> None:
    session = ChatSession(engine, PLAIN, None, SamplingParams(temperature=0.0, max_tokens=12))
    done = list(session.complete(RAW_PROMPT, stop=lambda text: len(text) >= 3))[-1]
    assert isinstance(done, Completed) and len(done.text) >= 3
    assert done.stats.finish_reason == "stop" and 0 < done.stats.completion_tokens < 12
    cancel = threading.Event()
    cancel.set()
    done = list(session.complete(RAW_PROMPT, cancel=cancel))[-1]
    assert isinstance(done, Completed)
    assert (done.text, done.stats.completion_tokens, done.stats.finish_reason) == ("", 0, "cancelled")
    assert session.history == []
