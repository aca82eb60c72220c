"""`katpilot serve` against the engine directly, in one run, side by side.

    python bench/server.py [--rounds 5] [--tokens 128] [--requests 40] [--concurrency 4]

Target (issue 5): tokens/s of one streaming request through the server >= 0.95 of the engine
streaming the same prompt directly (greedy, same settings; rounds alternate so drift on a noisy
machine hits both alike). Decode speed is counted from the first to the last token, as
bench/engine.py does. The server runs as its own process on loopback; the client reads the SSE
stream with http.client (the cost measured is the server's, not a client library's); the openai
SDK's figure is printed too, for reference.

Also: requests/s of short non-streaming requests (4 tokens) through the server, against the same
requests asked of an in-process ChatSession one after another.

Run it on a quiet machine: another process decoding at the same time makes llama.cpp's threads
wait on each other, and both sides slow down by far more than the server costs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from katpilot.engine.base import SamplingParams, StreamStats
from katpilot.engine.local import LocalEngine, default_threads
from katpilot.models import embedded_model_path
from katpilot.profiles import get_profile
from katpilot.session import ChatSession, ThinkControls

STORY = "Write a detailed story about a lighthouse keeper and a storm."
SHORT = "What is 2+2?"
SYSTEM = "You are a helpful assistant."
N_CTX = 2048
TARGET = 0.95
# Greedy and no repeat penalty, as bench/engine.py: the same prompt gives the same tokens both ways.
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "seed": 0}
READY = re.compile(r"katpilot: serving .* at (http://\S+)/v1")


# --- the server process ----------------------------------------------------------------------------


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = home / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATPILOT_")} | {"KATPILOT_HOME": str(home)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "katpilot", "serve", "--port", "0", "--n-ctx", str(N_CTX), "--queue", "64"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = READY.search(log.read_text(errors="replace"))
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text(errors='replace')}")


def post(conn: http.client.HTTPConnection, path: str, body: dict) -> http.client.HTTPResponse:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    if reply.status != 200:
        raise SystemExit(f"{path}: HTTP {reply.status}: {reply.read()[:500]!r}")
    return reply


# --- streaming tokens/s ------------------------------------------------------------------------------


def chat_body(question: str, tokens: int, stream: bool) -> dict:
    return {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "max_tokens": tokens,
        "think": "off",
        "stream": stream,
        "stream_options": {"include_usage": True},
        **GREEDY,
    }


def server_tokens_per_s(base_url: str, tokens: int) -> tuple[float, int]:
    """Decode tokens/s seen by a plain HTTP client reading the SSE stream, and the token count."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    reply = post(conn, "/v1/chat/completions", chat_body(STORY, tokens, stream=True))
    first = last = None
    generated = 0
    for raw in reply:  # one line at a time, as it arrives
        line = raw.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            generated = chunk["usage"]["completion_tokens"]
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
    conn.close()
    return (generated - 1) / (last - first), generated


def sdk_tokens_per_s(base_url: str, tokens: int) -> float:
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused")
    body = chat_body(STORY, tokens, stream=True)
    extra = {"think": "off", "repeat_penalty": body.pop("repeat_penalty")}
    first = last = None
    generated = 0
    for chunk in client.chat.completions.create(
        model="smollm2-135m",
        messages=body["messages"],
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.0,
        seed=0,
        extra_body=extra,
    ):
        if chunk.usage:
            generated = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
    return (generated - 1) / (last - first)


def engine_prompt(engine: LocalEngine, question: str, tokens: int) -> str:
    """Exactly the prompt the server's session sends for think=off."""
    profile = get_profile("auto", engine.info.chat_template, engine.info.tags_in_vocab)
    session = ChatSession(engine, profile, SYSTEM)
    prompt, _ = session.build_prompt(question, "off", tokens)
    return prompt + profile.prefill("off")


def engine_tokens_per_s(engine: LocalEngine, prompt: str, tokens: int) -> tuple[float, int]:
    stats = StreamStats()
    first = last = None
    params = SamplingParams(temperature=0.0, repeat_penalty=1.0, seed=0, max_tokens=tokens)
    for _piece in engine.stream(prompt, params, stats=stats):
        last = time.perf_counter()
        first = first or last
    return (stats.generated_tokens - 1) / (last - first), stats.generated_tokens


# --- short requests/s --------------------------------------------------------------------------------


def server_requests_per_s(base_url: str, requests: int, concurrency: int) -> float:
    url = urlsplit(base_url)
    local = threading.local()

    def one(_: int) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        post(local.conn, "/v1/chat/completions", chat_body(SHORT, 4, stream=False)).read()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    return requests / (time.perf_counter() - start)


def session_requests_per_s(engine: LocalEngine, requests: int) -> float:
    profile = get_profile("auto", engine.info.chat_template, engine.info.tags_in_vocab)
    start = time.perf_counter()
    for _ in range(requests):
        session = ChatSession(
            engine, profile, SYSTEM, SamplingParams(temperature=0.0, repeat_penalty=1.0, seed=0, max_tokens=4)
        )
        session.ask(SHORT, ThinkControls(think="off"))
    return requests / (time.perf_counter() - start)


def verdict(ratio: float) -> str:
    return "ok" if ratio >= TARGET else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="katpilot-bench-") as home:
        process, base_url = start_server(Path(home))
        try:
            engine = LocalEngine(embedded_model_path(), n_ctx=N_CTX, n_threads=default_threads())
            prompt = engine_prompt(engine, STORY, args.tokens)
            server_tokens_per_s(base_url, 8)  # warm both: first-call costs are not what is measured
            engine_tokens_per_s(engine, prompt, 8)
            direct, served, counts = [], [], set()
            for _ in range(args.rounds):
                rate, n = engine_tokens_per_s(engine, prompt, args.tokens)
                direct.append(rate)
                counts.add(n)
                rate, n = server_tokens_per_s(base_url, args.tokens)
                served.append(rate)
                counts.add(n)
            sdk = statistics.median(sdk_tokens_per_s(base_url, args.tokens) for _ in range(max(1, args.rounds // 2)))
            d, s = statistics.median(direct), statistics.median(served)
            ratio = s / d
            print(
                f"streaming tokens/s  engine directly {d:7.1f}   through the server {s:7.1f}   ratio {ratio:.3f}  (target >= {TARGET})  {verdict(ratio)}"
            )
            print(
                f"                    openai SDK client {sdk:7.1f}   ratio {sdk / d:.3f}  (for reference)   tokens per run: {sorted(counts)}"
            )

            session_requests_per_s(engine, 3)  # warm the prefix cache
            in_process = session_requests_per_s(engine, args.requests)
            server_requests_per_s(base_url, 3, 1)
            through = server_requests_per_s(base_url, args.requests, args.concurrency)
            print(
                f"short requests/s    in-process session {in_process:6.1f}   through the server {through:6.1f} "
                f"({args.requests} requests, {args.concurrency} clients, 4 tokens each)   ratio {through / in_process:.3f}"
            )
            engine.close()
        finally:
            process.terminate()
            process.wait(timeout=15)


if __name__ == "__main__":
    main()
