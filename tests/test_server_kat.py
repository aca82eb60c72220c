"""The server's KAT-format paths, in-process, on a scripted engine that writes AutoThink output.

The embedded SmolLM never writes KAT tags, so a real judge, a think segment the model opens by
itself and a decision by p(on) are driven by ScriptedEngine (tests/scripted.py), which
replays token pieces and scores the decision with fixed log-probabilities. The app is the real one
(create_app), run by Starlette's TestClient.
"""

from __future__ import annotations

import math

import pytest
from scripted import QUESTION, ScriptedEngine, client_for, sse_chunks

from katpilot.gate import KAT_TAGS

# p(on) with the scripted log-probabilities (-1 for <think_on>, -2 for <think_off>).
P_ON = 1 / (1 + math.exp(-1))
JUDGE = ["This needs", " a few steps.", "</judge>"]
THINKING = ["First", " add", " them.", "\n</think>", "\n<answer>\n", "42", "</answer>"]


def test_model_decides_to_think_non_streaming() -> None:
    with client_for(ScriptedEngine(JUDGE + THINKING)) as client:
        body = client.post("/v1/chat/completions", json=QUESTION).json()
    message = body["choices"][0]["message"]
    assert message["content"] == "42"
    assert message["reasoning_content"] == "First add them."
    info = body["katpilot"]
    assert info["judge"] == "This needs a few steps."
    assert (info["mode"], info["decided_by"], info["profile"]) == ("on", "model", "kat")
    assert info["p_on"] == pytest.approx(P_ON)
    assert (
        body["usage"]["completion_tokens_details"]["reasoning_tokens"] == info["tokens"]["think"] == 4
    )  # "\n</think>" carries think text
    assert info["tokens"]["judge"] == 2 and info["tokens"]["answer"] == 2  # tags count where they lead


def test_threshold_turns_thinking_off() -> None:
    engine = ScriptedEngine([*JUDGE, "42", "</answer>"])
    with client_for(engine) as client:
        body = client.post("/v1/chat/completions", json={**QUESTION, "think_threshold": 0.9}).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "42", "reasoning_content": None}
    assert (body["katpilot"]["mode"], body["katpilot"]["decided_by"]) == ("off", "model")
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert engine.prompts[-1].endswith("<think_off>\n<answer>\n")


def test_streaming_splits_judge_reasoning_and_answer() -> None:
    with client_for(ScriptedEngine(JUDGE + THINKING)) as client:
        reply = client.post(
            "/v1/chat/completions", json={**QUESTION, "stream": True, "stream_options": {"include_usage": True}}
        )
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(reply.text)
    notes = [
        c["katpilot"] for c in chunks if c.get("katpilot") and c["choices"] and not c["choices"][0]["finish_reason"]
    ]
    assert "".join(n.get("judge", "") for n in notes) == "This needs a few steps."
    decision = next(n for n in notes if "mode" in n)
    assert (decision["mode"], decision["decided_by"]) == ("on", "model") and decision["p_on"] == pytest.approx(P_ON)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content", "") for d in deltas)
    assert reasoning.strip() == "First add them." and content == "42"
    assert not any(tag in reply.text for tag in KAT_TAGS)  # no gate tag anywhere in the stream
    final = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert final["katpilot"]["judge"] == "This needs a few steps."
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4


def test_forced_off_skips_the_judge() -> None:
    engine = ScriptedEngine(["42", "</answer>"])
    with client_for(engine) as client:
        body = client.post("/v1/chat/completions", json={**QUESTION, "reasoning_effort": "none"}).json()
    assert body["choices"][0]["message"]["content"] == "42"
    assert body["katpilot"]["judge"] == "" and body["katpilot"]["decided_by"] == "user"
    assert engine.prompts[0].endswith("<think_off>\n<answer>\n") and engine.scored == []


def test_think_budget_closes_the_think_block() -> None:
    engine = ScriptedEngine(["step"] * 20 + ["42", "</answer>"])
    with client_for(engine) as client:
        body = client.post("/v1/chat/completions", json={**QUESTION, "think": "on", "think_budget": 5}).json()
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    assert body["katpilot"]["controls"]["set_by"] == {
        "think": "think",
        "think_budget": "think_budget",
        "think_threshold": "server",
    }
    assert any("budget" in n for n in body["katpilot"]["notices"])
