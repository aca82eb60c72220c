"""The local llama.cpp engine on the real embedded model; the remote engine's parts that need no server."""

from __future__ import annotations

import io
import threading
from collections.abc import Generator
from pathlib import Path

import pytest

from katpilot.chat_template import Message, render
from katpilot.engine.base import SamplingParams, StreamStats
from katpilot.engine.local import LocalEngine
from katpilot.engine.sse import sse_choices
from katpilot.errors import ContextOverflowError, EngineError

GREEDY = SamplingParams(temperature=0.0, max_tokens=40)


def prompt_for(engine: LocalEngine, question: str) -> str:
    info = engine.info
    return render(info.chat_template, [Message("user", question)], info.bos_token, info.eos_token)


def test_model_info_comes_from_the_gguf(engine: LocalEngine) -> None:
    assert engine.info.architecture == "llama"
    assert "<|im_start|>" in engine.info.chat_template
    assert engine.info.eos_token == "<|im_end|>"
    assert engine.info.n_ctx == 2048


def test_greedy_generation_is_deterministic_and_stops_on_eos(engine: LocalEngine) -> None:
    prompt = prompt_for(engine, "What is 2+2?")
    stats_a, stats_b = StreamStats(), StreamStats()
    a = "".join(engine.stream(prompt, SamplingParams(temperature=0.0, max_tokens=200), stats=stats_a))
    b = "".join(engine.stream(prompt, SamplingParams(temperature=0.0, max_tokens=200), stats=stats_b))
    assert a == b and "4" in a
    assert stats_a.finish_reason == "stop"
    assert "<|im_end|>" not in a
    assert stats_b.reused_tokens == stats_b.prompt_tokens - 2  # served from the KV cache but two tokens


def test_seeded_sampling_repeats(engine: LocalEngine) -> None:
    prompt = prompt_for(engine, "Name a fruit.")
    params = SamplingParams(temperature=1.0, seed=1234, max_tokens=20)
    assert "".join(engine.stream(prompt, params)) == "".join(engine.stream(prompt, params))


def test_max_tokens_stops_with_length(engine: LocalEngine) -> None:
    stats = StreamStats()
    pieces = list(
        engine.stream(
            prompt_for(engine, "Write a long essay on rivers."),
            SamplingParams(temperature=0.0, max_tokens=7),
            stats=stats,
        )
    )
    assert stats.generated_tokens == 7 and stats.finish_reason == "length"
    assert len(pieces) <= 7


def test_cancel_from_another_thread_stops_within_one_token(engine: LocalEngine) -> None:
    cancel = threading.Event()
    seen_five = threading.Event()
    pieces: list[str] = []
    stats = StreamStats()
    counted_at_cancel: list[int] = []

    def consume() -> None:
        for piece in engine.stream(
            prompt_for(engine, "Write a long story about a dragon."),
            SamplingParams(temperature=0.0, max_tokens=500),
            cancel,
            stats,
        ):
            pieces.append(piece)
            if len(pieces) == 5:
                seen_five.set()
                cancel.wait(5)  # hold here until the other thread has cancelled

    worker = threading.Thread(target=consume)
    worker.start()
    assert seen_five.wait(30)
    counted_at_cancel.append(stats.generated_tokens)
    cancel.set()
    worker.join(30)
    assert not worker.is_alive()
    assert stats.finish_reason == "cancelled"
    assert stats.generated_tokens <= counted_at_cancel[0] + 1
    assert len(pieces) >= 5  # what was produced is kept


def test_prompt_longer_than_context_is_a_clear_error(model_path: Path) -> None:
    small = LocalEngine(model_path, n_ctx=256, n_threads=2)
    try:
        with pytest.raises(ContextOverflowError) as info:
            list(small.stream("word " * 400, GREEDY))
        assert "context window is 256" in info.value.one_line()
    finally:
        small.close()


def test_continuation_logprobs_are_log_probabilities(engine: LocalEngine) -> None:
    prompt = prompt_for(engine, "Say yes.")
    first = engine.continuation_logprobs(prompt, ["Yes", "No", "\n<think_on>"])
    again = engine.continuation_logprobs(prompt, ["Yes", "No", "\n<think_on>"])
    assert first == again
    assert all(lp < 0 for lp in first)
    assert first[0] > first[2]  # a plain word beats a made-up tag


def test_scoring_a_prompt_near_the_batch_size(engine: LocalEngine, model_path: Path) -> None:
    """A prompt just under n_batch plus a multi-token continuation must not overrun the batch."""
    n_batch = engine.llm.n_batch
    prompts = {
        engine.count_tokens(prompt_for(engine, "word " * w)): prompt_for(engine, "word " * w)
        for w in range(n_batch - 50, n_batch)
    }
    for size in (n_batch - 2, n_batch - 1, n_batch):
        fresh = LocalEngine(model_path, n_ctx=2048, n_threads=2)  # empty cache: the whole prompt is one batch
        try:
            scores = fresh.continuation_logprobs(prompts[size], ["</think>", "\n</think>"])
            assert all(s < 0 for s in scores)
            assert scores == engine.continuation_logprobs(prompts[size], ["</think>", "\n</think>"])
        finally:
            fresh.close()


def test_tokens_are_counted_not_pieces(engine: LocalEngine) -> None:
    from katpilot.profiles import PLAIN
    from katpilot.session import ChatSession, ThinkControls

    chat = ChatSession(engine, PLAIN, None, SamplingParams(temperature=0.0, max_tokens=40))
    response = chat.ask(
        "Write 'hello' in Chinese, Japanese and Korean script, then ten emoji.", ThinkControls(think="off")
    )
    assert response.stats.completion_tokens <= 40
    if response.stats.finish_reason == "length":
        assert response.stats.completion_tokens == 40
    assert "\ufffd" not in response.answer


def test_nested_call_from_the_same_thread_is_an_error_not_a_hang(engine: LocalEngine) -> None:
    from katpilot.errors import EngineError

    stream = engine.stream(prompt_for(engine, "Count to ten."), GREEDY)
    next(stream)
    try:
        with pytest.raises(EngineError, match="still busy"):
            engine.count_tokens("x") and engine.continuation_logprobs("x", ["y"])
    finally:
        stream.close()
    assert engine.continuation_logprobs(prompt_for(engine, "hi"), ["Hello"])  # free again


def test_a_stream_closed_early_finishes_at_once(engine: LocalEngine) -> None:
    """Callers stop reading with `.close()`: the engine's cleanup runs then, not at garbage collection."""
    stats = StreamStats()
    stream = engine.stream(prompt_for(engine, "Count to ten."), GREEDY, stats=stats)
    assert isinstance(stream, Generator)
    next(stream)
    stream.close()
    assert stats.finish_reason == "cancelled"
    assert engine.count_tokens("hello") >= 1  # the engine is free again


URL = "http://gpu-box:8000/v1"


def test_sse_choices_reads_completion_chunks() -> None:
    body = (
        b": keep-alive\n\n"
        b'data: {"choices": [{"text": "4", "finish_reason": null}]}\n\n'
        b"event: ping\n\n"
        b'data: {"choices": [{"text": "", "finish_reason": "stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert list(sse_choices(io.BytesIO(body), URL)) == [("4", None), ("", "stop")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'data: {"error": {"message": "out of\\n  memory"}}\n\n', "failed mid-answer: out of memory"),
        (b'data: {"choices": [{"text": "4"}]}\n\n', "closed the stream mid-answer"),
        (b"", "does not look OpenAI-compatible: POST /v1/completions returned no event stream"),
        (b"data: {not json\n\n", "a streamed event is not JSON"),
        (b'data: {"id": 1}\n\n', "not a completion chunk"),
        (b'data: {"choices": "x"}\n\n', "choice is not an object"),
        (b'data: {"choices": [{"text": 5}]}\n\n', "text is not a string"),
        (b'data: {"choices": [{"text": "4", "finish_reason": ["stop"]}]}\n\n', "finish_reason is not a string"),
    ],
)
def test_sse_choices_turns_a_broken_stream_into_one_error(body: bytes, message: str) -> None:
    with pytest.raises(EngineError, match=message) as caught:
        list(sse_choices(io.BytesIO(body), URL))
    assert URL in caught.value.message and caught.value.fix
