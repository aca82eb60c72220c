"""Tokens/s through katpilot's remote engine against a direct client of the same server.

    python bench/remote.py [--rounds 5] [--tokens 128] [--url http://host:port/v1 --model ID]

Without --url it starts llama-cpp-python's server (`python -m llama_cpp.server`, extra `server`) on
the embedded model on a free loopback port. Both sides stream the same raw prompt with the same
greedy settings from `/v1/completions`; runs alternate in one process and the medians are compared.
Target (issue 6): remote engine >= 0.95 of the direct client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlsplit

from katpilot.chat_template import Message, render
from katpilot.engine.base import SamplingParams, StreamStats
from katpilot.engine.remote import RemoteEngine
from katpilot.models import embedded_model_path

QUESTION = "Write a detailed story about a lighthouse keeper and a storm."
TARGET = 0.95


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tempfile.mkstemp(prefix="bench-remote-", suffix=".log")[1], "wb")  # noqa: SIM115
    threads = str(min(4, os.cpu_count() or 1))
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_model_path()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        threads,
        "--n_threads_batch",
        threads,
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"llama_cpp.server exited; see {log.name}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def direct_tokens_per_s(url: str, model: str, prompt: str, n: int) -> float:
    """A plain streaming client: one POST, read the events, time first to last token."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0.0,
        "repeat_penalty": 1.0,
        "stream": True,
    }
    conn.request("POST", parts.path + "/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first = last = 0.0
    count = 0
    for line in resp:
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        if json.loads(line[5:])["choices"][0].get("text"):
            last = time.perf_counter()
            first = first or last
            count += 1
    conn.close()
    return (count - 1) / (last - first)


def engine_tokens_per_s(engine: RemoteEngine, prompt: str, n: int) -> float:
    first = last = 0.0
    stats = StreamStats()
    for _piece in engine.stream(prompt, SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=n), stats=stats):
        last = time.perf_counter()
        first = first or last
    return (stats.generated_tokens - 1) / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--url", help="an OpenAI-compatible /v1 base; default: start llama_cpp.server")
    parser.add_argument("--model", help="the served model id (with --url)")
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        spec = "openai+" + url + (f"#{args.model}" if args.model else "")
        engine = RemoteEngine(spec, api_key=os.environ.get("KATPILOT_API_KEY"), n_ctx=2048)
        info = engine.info
        prompt = render(info.chat_template, [Message("user", QUESTION)], info.bos_token, info.eos_token)
        direct, remote = [], []
        engine_tokens_per_s(engine, prompt, 8)  # warm the server's cache and the connection path
        for _ in range(args.rounds):
            direct.append(direct_tokens_per_s(url, engine.model, prompt, args.tokens))
            remote.append(engine_tokens_per_s(engine, prompt, args.tokens))
        d, r = statistics.median(direct), statistics.median(remote)
        ratio = r / d
        verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
        print(
            f"tokens/s  direct client {d:7.1f}   katpilot remote engine {r:7.1f}   ratio {ratio:.3f}  (target >= {TARGET})  {verdict}"
        )
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
