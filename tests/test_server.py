"""`katpilot serve` as clients use it: the official openai client against a real server process on
loopback, on the embedded default model (SmolLM2, profile plain). max_tokens stay small: each
request is a fraction of a second.

The KAT-format paths (a judge, a real think segment, a decision by p(on)) need a model that writes
KAT tags: they are in test_server_kat.py, on a scripted engine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from server_helpers import Server, running_server, server_env

from katpilot.gate import KAT_TAGS

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
COUNT = [{"role": "user", "content": "Count from 1 to 30, separated by commas."}]
GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("home"), "--queue", "8", "--max-tokens", "48", "--n-ctx", "2048"
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)


def no_tags(text: str) -> bool:
    return not any(tag in text for tag in KAT_TAGS)


def stream_chat(client: openai.OpenAI, **kwargs: object) -> list:
    return list(client.chat.completions.create(model="smollm2-135m", stream=True, **kwargs))  # type: ignore[call-overload]


# --- models, openapi, health --------------------------------------------------------------------


def test_list_and_retrieve_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["smollm2-135m"]
    assert client.models.retrieve("smollm2-135m").id == "smollm2-135m"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_openapi_document_lists_every_endpoint(server: Server) -> None:
    doc = httpx.get(server.base_url + "/openapi.json").json()
    assert set(doc["paths"]) >= {
        "/health",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/chat/completions",
        "/v1/completions",
    }
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "400" in chat["responses"] and "429" in chat["responses"] and "422" not in chat["responses"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    request = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {
        "think",
        "think_budget",
        "think_threshold",
        "reasoning_effort",
        "chat_template_kwargs",
        "thinking_token_budget",
    } <= set(request)


# --- chat -----------------------------------------------------------------------------------------


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2-135m", messages=QUESTION, max_tokens=16, extra_body={"think": "off"}, **GREEDY
    )
    message = reply.choices[0].message
    assert message.role == "assistant" and message.content and no_tags(message.content)
    assert "4" in message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0
    info = reply.katpilot  # type: ignore[attr-defined]
    assert (info["mode"], info["decided_by"], info["p_on"]) == ("off", "user", None)
    assert info["profile"] == "plain"
    assert sum(info["tokens"].values()) == reply.usage.completion_tokens


def test_system_message_and_history_reach_the_model(client: openai.OpenAI) -> None:
    def prompt_tokens(messages: list[dict]) -> int:
        return client.chat.completions.create(
            model="smollm2-135m", messages=messages, max_tokens=2, **GREEDY
        ).usage.prompt_tokens

    pirate = {"role": "system", "content": "Be a pirate."}
    history = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."}]
    last = {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}
    default_system = prompt_tokens([last])
    own_system = prompt_tokens([pirate, last])
    assert own_system < default_system  # the request's system message replaces the server's (longer) one
    assert prompt_tokens([pirate, *history, last]) >= own_system + 8  # earlier turns are in the prompt


def test_chat_streaming_is_incremental_and_matches_non_streaming(client: openai.OpenAI) -> None:
    kwargs = {"messages": COUNT, "max_tokens": 24, "extra_body": {"think": "off"}, **GREEDY}
    whole = client.chat.completions.create(model="smollm2-135m", **kwargs)  # type: ignore[call-overload]
    chunks = stream_chat(client, stream_options={"include_usage": True}, **kwargs)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) >= 2  # sent as the model writes it, not as one blob at the end
    assert "".join(contents).rstrip() == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert finals[0].katpilot["mode"] == "off"  # type: ignore[attr-defined]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_think_on_streams_reasoning_separately(client: openai.OpenAI) -> None:
    chunks = stream_chat(
        client,
        messages=QUESTION,
        max_tokens=20,
        stream_options={"include_usage": True},
        extra_body={"think": "on", "think_budget": 6},
        **GREEDY,
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [d.reasoning_content for d in deltas if getattr(d, "reasoning_content", None)]
    content = [d.content for d in deltas if d.content]
    assert reasoning and content
    assert not any(getattr(d, "reasoning_content", None) and d.content for d in deltas)  # never both in one delta
    first_reasoning = next(i for i, d in enumerate(deltas) if getattr(d, "reasoning_content", None))
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert first_reasoning < first_content
    assert no_tags("".join(reasoning) + "".join(content))
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 6
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.katpilot["tokens"]["think"] == 6  # type: ignore[attr-defined]
    assert any("budget" in n for n in final.katpilot["notices"])  # type: ignore[attr-defined]


# Every think control, alone and in combination, on the real model: (request fields, mode,
# decided_by, whether there is reasoning, which field set the mode, the effective budget).
CONTROLS = [
    ({"think": "off"}, "off", "user", False, "think", None),
    ({"think": "on", "think_budget": 4}, "on", "user", True, "think", 4),
    ({"think": "auto"}, "off", "none", False, "think", None),  # plain SmolLM: no decision point, nobody decides
    ({"reasoning_effort": "none"}, "off", "user", False, "reasoning_effort", None),
    ({"reasoning_effort": "minimal"}, "off", "user", False, "reasoning_effort", None),
    ({"reasoning_effort": "low"}, "off", "none", False, "reasoning_effort", 256),
    ({"reasoning_effort": "medium"}, "off", "none", False, "reasoning_effort", None),
    ({"reasoning_effort": "high", "think_budget": 4}, "on", "user", True, "reasoning_effort", 4),
    (
        {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 3},
        "on",
        "user",
        True,
        "chat_template_kwargs.enable_thinking",
        3,
    ),
    (
        {"chat_template_kwargs": {"enable_thinking": False}},
        "off",
        "user",
        False,
        "chat_template_kwargs.enable_thinking",
        None,
    ),
    ({"think": "off", "reasoning_effort": "high"}, "off", "user", False, "think", None),
    (
        {"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "high"},
        "off",
        "user",
        False,
        "chat_template_kwargs.enable_thinking",
        None,
    ),
]


@pytest.mark.parametrize(("fields", "mode", "decided_by", "thinks", "set_by", "budget"), CONTROLS)
def test_think_controls(
    client: openai.OpenAI, fields: dict, mode: str, decided_by: str, thinks: bool, set_by: str, budget: int | None
) -> None:
    effort = fields.get("reasoning_effort")
    extra = {k: v for k, v in fields.items() if k != "reasoning_effort"}
    kwargs = {"reasoning_effort": effort} if effort else {}
    reply = client.chat.completions.create(
        model="smollm2-135m",
        messages=QUESTION,
        max_tokens=12,
        extra_body=extra,
        **kwargs,
        **GREEDY,  # type: ignore[arg-type]
    )
    info = reply.katpilot  # type: ignore[attr-defined]
    assert (info["mode"], info["decided_by"]) == (mode, decided_by)
    assert info["controls"]["set_by"]["think"] == set_by
    assert info["controls"]["think_budget"] == budget
    reasoning_tokens = reply.usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens == info["tokens"]["think"]
    assert (reasoning_tokens > 0) == thinks
    assert bool(reply.choices[0].message.reasoning_content) == thinks  # type: ignore[attr-defined]
    if thinks and budget:
        assert reasoning_tokens == budget


def test_a_plain_model_decides_nothing_in_the_stream_and_the_summary(server: Server, client: openai.OpenAI) -> None:
    chunks = stream_chat(client, messages=QUESTION, max_tokens=8, extra_body={"think": "auto"}, **GREEDY)
    notes = [c.katpilot for c in chunks if getattr(c, "katpilot", None)]  # type: ignore[attr-defined]
    decisions = [(n["mode"], n["decided_by"]) for n in notes if "decided_by" in n]
    assert decisions[0] == ("off", "none")  # the note sent as the answer starts
    assert decisions[-1] == ("off", "none") and notes[-1]["p_on"] is None  # the closing summary
    doc = httpx.get(server.base_url + "/openapi.json").json()
    assert "none" in json.dumps(doc["components"]["schemas"]["KatpilotInfo"]["properties"]["decided_by"])


def test_stop_sequence_cuts_the_answer(client: openai.OpenAI) -> None:
    kwargs = {"model": "smollm2-135m", "messages": COUNT, "max_tokens": 24, **GREEDY}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    middle = len(whole) // 2
    stop = whole[middle : middle + 2]  # whatever the model writes, cut it halfway
    cut = client.chat.completions.create(stop=[stop], **kwargs)  # type: ignore[call-overload]
    assert cut.choices[0].message.content == whole[: whole.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = stream_chat(client, stop=stop, **{k: v for k, v in kwargs.items() if k != "model"})
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole[: whole.index(stop)]


def test_completions_endpoint(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="smollm2-135m", prompt="What is 2+2?", max_tokens=12, extra_body={"think": "off"}, **GREEDY
    )
    assert "4" in reply.choices[0].text and no_tags(reply.choices[0].text)
    assert reply.katpilot["mode"] == "off"  # type: ignore[attr-defined]
    chunks = list(
        client.completions.create(
            model="smollm2-135m",
            prompt="What is 2+2?",
            max_tokens=12,
            stream=True,
            extra_body={"think": "off"},
            **GREEDY,
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices).rstrip() == reply.choices[0].text


# --- bad requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"extra_body": {"think": "maybe"}}, "think"),
        ({"extra_body": {"think_budget": 0}}, "think_budget"),
        ({"extra_body": {"think_threshold": 1.5}}, "think_threshold"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        (
            {"extra_body": {"chat_template_kwargs": {"enable_thinking": "perhaps"}}},
            "chat_template_kwargs.enable_thinking",
        ),
        ({"n": 2}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_bad_fields_are_400_naming_the_field(client: openai.OpenAI, kwargs: dict, param: str) -> None:
    request = {"model": "smollm2-135m", "messages": QUESTION, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)  # type: ignore[call-overload]
    error = caught.value.body
    assert error["param"] == param, error  # type: ignore[index]
    assert error["type"] == "invalid_request_error"  # type: ignore[index]
    assert "fix:" in error["message"] and "Traceback" not in error["message"]  # type: ignore[index]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)
    assert caught.value.body["param"] == "model" and "smollm2-135m" in caught.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {"Content-Type": "application/json"}),
        (b"", {"Content-Type": "application/json"}),
        (b"[1, 2]", {"Content-Type": "application/json"}),
        (json.dumps({"messages": QUESTION}).encode(), {"Content-Type": "text/plain"}),
    ],
)
def test_bad_json_is_400(server: Server, content: bytes, headers: dict) -> None:
    reply = httpx.post(server.v1 + "/chat/completions", content=content, headers=headers)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_json"
    assert "application/json" in reply.json()["error"]["message"]


def test_prompt_longer_than_the_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "word " * 3000}], max_tokens=4
        )
    assert caught.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def test_streaming_request_errors_before_the_stream_starts(client: openai.OpenAI) -> None:
    """A prompt-time error on a streaming request is still a status code, not a broken stream."""
    with pytest.raises(openai.BadRequestError):
        stream_chat(client, messages=[{"role": "user", "content": "word " * 3000}], max_tokens=4)


# --- cancellation ---------------------------------------------------------------------------------


def test_dropped_stream_is_cancelled_and_the_next_request_is_served(server: Server, client: openai.OpenAI) -> None:
    before = httpx.get(server.base_url + "/health").json()["finished"].get("cancelled", 0)
    long = [{"role": "user", "content": "Count from 1 to 2000, separated by commas."}]
    stream = client.chat.completions.create(model="smollm2-135m", messages=long, max_tokens=2000, stream=True, **GREEDY)
    next(iter(stream))  # the role chunk: generation is under way
    stream.close()
    # 2000 tokens would take ~20 s; the next request must not wait for them.
    quick = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=15)
    reply = quick.chat.completions.create(model="smollm2-135m", messages=QUESTION, max_tokens=4)
    assert reply.choices[0].message.content
    health = httpx.get(server.base_url + "/health").json()
    assert health["finished"].get("cancelled", 0) == before + 1
    assert health["queue"]["in_flight"] == 0


def raw_request(server: Server, body: dict) -> socket.socket:
    """A chat request on a plain socket, so the test decides exactly when the client goes away."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    return sock


def wait_for(server: Server, check, what: str) -> dict:
    """Poll /health until `check` holds (a safety limit, not a measurement)."""
    for _ in range(1000):
        health = httpx.get(server.base_url + "/health").json()
        if check(health):
            return health
        time.sleep(0.01)
    raise AssertionError(f"server never reached: {what}: {health}")


LONG = {
    "messages": [{"role": "user", "content": "Count from 1 to 2000, separated by commas."}],
    "max_tokens": 2000,
    "temperature": 0,
}


def test_dropped_non_streaming_request_is_cancelled(server: Server) -> None:
    before = httpx.get(server.base_url + "/health").json()["finished"].get("cancelled", 0)
    sock = raw_request(server, LONG)
    wait_for(server, lambda h: h["queue"]["in_flight"] == 1, "generating")
    sock.close()
    health = wait_for(server, lambda h: h["queue"]["in_flight"] == 0, "slot freed")
    assert health["finished"].get("cancelled", 0) == before + 1


def test_client_leaving_the_queue_frees_its_slot_at_once(server: Server) -> None:
    running = raw_request(server, {**LONG, "stream": True})
    wait_for(server, lambda h: h["queue"]["in_flight"] == 1, "first request running")
    waiting = raw_request(server, {**LONG, "max_tokens": 4})
    wait_for(server, lambda h: h["queue"]["in_flight"] == 2, "second request queued")
    waiting.close()
    wait_for(server, lambda h: h["queue"]["in_flight"] == 1, "queued request gone while the first still runs")
    running.close()
    wait_for(server, lambda h: h["queue"]["in_flight"] == 0, "all done")


# --- auth and binding ------------------------------------------------------------------------------


def test_without_a_key_any_bearer_is_accepted(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer whatever"}):
        assert httpx.get(server.v1 + "/models", headers=headers).status_code == 200


def test_api_key_is_required_when_set(tmp_path: Path) -> None:
    with running_server(tmp_path, "--api-key", "s3cret", "--max-tokens", "4") as srv:
        for key in ("wrong", "s3cre", "s3cret-and-more"):
            bad = openai.OpenAI(base_url=srv.v1, api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                bad.chat.completions.create(model="smollm2-135m", messages=QUESTION)
            assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        missing = httpx.post(srv.v1 + "/chat/completions", json={"messages": QUESTION})
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        good = openai.OpenAI(base_url=srv.v1, api_key="s3cret", max_retries=0)
        assert (
            good.chat.completions.create(model="smollm2-135m", messages=QUESTION).choices[0].message.content is not None
        )
        assert [m.id for m in good.models.list()] == ["smollm2-135m"]
        assert httpx.get(srv.base_url + "/health").status_code == 200  # monitoring needs no key
        doc = httpx.get(srv.base_url + "/openapi.json").json()
        assert "HTTPBearer" in doc["components"]["securitySchemes"]


def run_serve(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "katpilot", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(home),
    )


def test_refuses_a_public_address_without_a_key(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0" in lines[0] and "--api-key" in lines[0]


def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_serve(tmp_path, "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_serving_never_imports_torch() -> None:
    code = "import sys, katpilot.server.app, katpilot.server.serve; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_shutdown_ends_open_streams_cleanly(tmp_path: Path) -> None:
    """SIGTERM (or Ctrl+C) cancels the running generation: the stream still ends with [DONE]."""
    with running_server(tmp_path) as srv:
        with httpx.stream("POST", srv.v1 + "/chat/completions", json={**LONG, "stream": True}, timeout=30) as reply:
            lines = reply.iter_lines()
            assert next(lines).startswith("data: ")
            srv.process.terminate()
            rest = [line for line in lines if line.startswith("data: ")]
        assert srv.process.wait(timeout=10) is not None
    assert rest[-1] == "data: [DONE]"
    final = json.loads(rest[-2][len("data: ") :])
    assert final["katpilot"]["finish_reason"] == "cancelled"
    assert "Traceback" not in srv.output()
