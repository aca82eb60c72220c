"""The server's pure parts: think-control precedence, stop sequences, message mapping, the queue."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from katpilot.engine.base import SamplingParams
from katpilot.errors import ConfigError
from katpilot.server import sse
from katpilot.server.api_errors import ApiError
from katpilot.server.controls import LOW_EFFORT_BUDGET, resolve_controls
from katpilot.server.conversation import chat_conversation, sampling_for
from katpilot.server.queue import Busy, Closed, GenerationQueue
from katpilot.server.responses import ChatShape, CompletionShape, Reply, StreamEncoder
from katpilot.server.schemas import ChatCompletionRequest, StreamNote, ThinkFields
from katpilot.server.serve import ServeOptions, check_bind, is_loopback
from katpilot.server.stop import StopMatcher
from katpilot.server.transcript import Piece, merge_pieces
from katpilot.session import ThinkControls

SERVER = ThinkControls(think="auto", budget=None, threshold=0.5)


# --- controls -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "think", "budget", "threshold"),
    [
        ({}, "auto", None, 0.5),
        ({"reasoning_effort": "none"}, "off", None, 0.5),
        ({"reasoning_effort": "minimal"}, "off", None, 0.5),
        ({"reasoning_effort": "low"}, "auto", LOW_EFFORT_BUDGET, 0.5),
        ({"reasoning_effort": "medium"}, "auto", None, 0.5),
        ({"reasoning_effort": "high"}, "on", None, 0.5),
        ({"reasoning_effort": "xhigh"}, "on", None, 0.5),
        ({"chat_template_kwargs": {"enable_thinking": True}}, "on", None, 0.5),
        ({"chat_template_kwargs": {"enable_thinking": False}}, "off", None, 0.5),
        ({"chat_template_kwargs": {"other": 1}}, "auto", None, 0.5),
        ({"thinking_token_budget": 64}, "auto", 64, 0.5),
        # precedence: katpilot's fields > enable_thinking > reasoning_effort > server
        ({"think": "on", "chat_template_kwargs": {"enable_thinking": False}}, "on", None, 0.5),
        ({"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "high"}, "off", None, 0.5),
        ({"think_budget": 10, "thinking_token_budget": 20, "reasoning_effort": "low"}, "auto", 10, 0.5),
        ({"thinking_token_budget": 20, "reasoning_effort": "low"}, "auto", 20, 0.5),
        ({"reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": True}}, "on", LOW_EFFORT_BUDGET, 0.5),
        ({"think_threshold": 0.8}, "auto", None, 0.8),
    ],
)
def test_control_precedence(fields: dict, think: str, budget: int | None, threshold: float) -> None:
    controls, _ = resolve_controls(ThinkFields(**fields), SERVER)
    assert (controls.think, controls.budget, controls.threshold) == (think, budget, threshold)


def test_server_defaults_fill_what_the_request_leaves_out() -> None:
    controls, set_by = resolve_controls(ThinkFields(reasoning_effort="high"), ThinkControls("off", 99, 0.3))
    assert (controls.think, controls.budget, controls.threshold) == ("on", 99, 0.3)
    assert set_by == {"think": "reasoning_effort", "think_budget": "server", "think_threshold": "server"}


# --- stop sequences -------------------------------------------------------------------------------


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(p) for p in pieces) + matcher.flush()


@given(
    st.text("ab\n", max_size=30), st.lists(st.text("ab\n", min_size=1, max_size=3), min_size=1, max_size=2), st.data()
)
def test_stop_matcher_equals_cutting_the_whole_text(text: str, stops: list[str], data: st.DataObject) -> None:
    """However the answer is split into pieces, it is cut before the first stop sequence to complete."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    found = [(i + len(s), i) for s in stops if (i := text.find(s)) >= 0]
    expected = text[: min(found)[1]] if found else text
    matcher = StopMatcher(stops)
    assert feed_all(matcher, pieces) == expected
    assert matcher.hit == bool(found)


def test_stop_matcher_holds_back_a_possible_start() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("the E") == "the "
    assert matcher.feed("N") == ""
    assert matcher.feed("X") == "ENX"
    assert matcher.feed(" E") == " "
    assert matcher.feed("ND more") == "" and matcher.hit


# --- messages -------------------------------------------------------------------------------------


def test_messages_map_onto_a_session() -> None:
    body = ChatCompletionRequest(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use Python."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None},
            {"role": "system", "content": "Mid-conversation note."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ]
    )
    conv = chat_conversation(body)
    assert conv.system == "Be brief.\n\nUse Python."
    assert [(m.role, m.content) for m in conv.history] == [
        ("user", "Hi"),
        ("assistant", ""),
        ("system", "Mid-conversation note."),
    ]
    assert conv.user == "a\nb"


def test_lone_surrogates_are_replaced() -> None:
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "bad \ud800 text"}])
    assert chat_conversation(body).user == "bad ? text"


def test_tool_messages_are_refused_clearly() -> None:
    body = ChatCompletionRequest(messages=[{"role": "tool", "content": "42"}, {"role": "user", "content": "and?"}])
    with pytest.raises(ApiError) as caught:
        chat_conversation(body)
    assert caught.value.param == "messages[0].role" and "tool" in caught.value.message


def test_sampling_takes_the_request_over_the_server() -> None:
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], temperature=0, top_p=0.5, seed=2**40)
    params = sampling_for(body, SamplingParams(temperature=0.7, top_k=7, max_tokens=100), n_ctx=2048, max_tokens=None)
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0, 0.5, 7, 100)
    assert 0 <= params.seed < 0xFFFFFFFF  # llama.cpp's seed is 32 bits; 2**32-1 means "random"


# --- the queue ------------------------------------------------------------------------------------


def test_queue_admits_up_to_the_limit() -> None:
    queue = GenerationQueue(2)
    first, _ = queue.admit(), queue.admit()
    with pytest.raises(Busy) as caught:
        queue.admit()
    assert caught.value.retry_after >= 1 and queue.in_flight == 2
    queue.release(first)
    queue.release(first)  # twice: still one slot
    assert queue.in_flight == 1
    queue.admit()
    queue.close()


def test_queue_runs_work_in_a_thread_and_cancels_when_left() -> None:
    async def scenario() -> tuple[list[int], bool, int, str]:
        queue = GenerationQueue(4)
        cancel = threading.Event()
        threads: list[str] = []

        def work() -> Iterator[int]:
            threads.append(threading.current_thread().name)
            for i in range(1000):
                yield i
                if cancel.wait(0.002):  # a token's worth of work, or the consumer left
                    return

        got: list[int] = []
        ticket = queue.admit()
        async for batch in queue.run(ticket, work, cancel, interval=0.0):
            got += batch
            if len(got) >= 3:
                break  # the client leaves
        for _ in range(200):  # the slot frees when the worker is done
            if queue.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        queue.close()
        return got, cancel.is_set(), queue.in_flight, threads[0]

    got, cancelled, in_flight, thread = asyncio.run(scenario())
    assert got[:3] == [0, 1, 2] and len(got) < 1000 and cancelled and in_flight == 0
    assert thread.startswith("katpilot-generate")


def test_queue_passes_errors_to_the_consumer() -> None:
    async def scenario() -> int:
        queue = GenerationQueue(1)

        def work() -> Iterator[int]:
            yield 1
            raise ApiError(400, "bad", "fix it")

        with pytest.raises(ApiError):
            async for _ in queue.run(queue.admit(), work, threading.Event()):
                pass
        for _ in range(200):
            if queue.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        queue.close()
        return queue.in_flight

    assert asyncio.run(scenario()) == 0


# --- binding --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback


def test_public_bind_needs_a_key_or_insecure() -> None:
    with pytest.raises(ConfigError) as caught:
        check_bind(ServeOptions(host="0.0.0.0"))
    assert "--api-key" in caught.value.one_line() and "--insecure" in caught.value.one_line()
    check_bind(ServeOptions(host="0.0.0.0", api_key="k"))
    check_bind(ServeOptions(host="0.0.0.0", insecure=True))


def test_serve_options_are_checked_together() -> None:
    with pytest.raises(ConfigError) as caught:
        ServeOptions(port=70000, queue=0, api_key=" ")
    assert (
        "--port" in caught.value.message and "--queue" in caught.value.message and "--api-key" in caught.value.message
    )


# --- stream encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [ChatShape(), CompletionShape()], ids=["chat", "completion"])
@given(text=st.text())
def test_fast_stream_encoding_equals_the_models(shape: ChatShape | CompletionShape, text: str) -> None:
    """The templated chunk is byte-for-byte JSON-equal to the chunk rendered from the models."""
    reply = Reply.new(shape.prefix, "m")
    encoder = StreamEncoder(shape, reply)
    for kind in ("content", "reasoning"):
        piece = Piece(kind, _clean_text(text))  # type: ignore[arg-type]
        fast, slow = encoder.encode(piece), sse.event(shape.piece(reply, piece))
        assert fast.startswith(b"data: ") and fast.endswith(b"\n\n")
        assert json.loads(fast[6:]) == json.loads(slow[6:])


def _clean_text(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def test_merge_pieces_joins_text_of_one_kind_only() -> None:
    note = Piece("note", note=StreamNote(judge="j"))
    pieces = [Piece("reasoning", "a"), Piece("reasoning", "b"), note, Piece("content", "c"), Piece("content", "d")]
    assert merge_pieces(pieces) == [Piece("reasoning", "ab"), note, Piece("content", "cd")]


def test_a_stopping_queue_starts_nothing() -> None:
    queue = GenerationQueue(2)
    ticket = queue.admit()
    queue.stop()
    with pytest.raises(Closed):
        queue.admit()

    async def waiting_request() -> None:
        async for _ in queue.run(ticket, lambda: iter([1]), threading.Event()):
            pass

    with pytest.raises(Closed):
        asyncio.run(waiting_request())
    assert queue.in_flight == 0
    queue.close()
