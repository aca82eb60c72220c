"""The remote engine against a real third-party OpenAI-compatible server: llama-cpp-python's own
(`python -m llama_cpp.server`, extra `server`) on the embedded model, started on loopback once per
test run. Fake servers appear only to make a failure happen on purpose (garbage, hangs).

What is promised across engines, and tested here: the server is sent exactly the prompt and
sampling settings the local engine would get; p(on) agrees within 1e-3; greedy text and token counts
agree except where the local engine itself sees a near tie (NEAR_TIE_NATS) at the first token they
differ on. llama.cpp's floating-point results depend on the CPU's kernels and on how the prompt
is split into batches, so bit-equal text across two processes cannot be promised on every x86-64
machine (docs/remote.md). A front end on the remote engine (CLI, LSP) is compared with the remote
engine used in-process on the same server, which is exact.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from katpilot.config import load_settings, render_show
from katpilot.engine.base import Engine, SamplingParams, StreamStats
from katpilot.engine.remote import RemoteEngine, parse_spec
from katpilot.errors import EngineError, KatpilotError
from katpilot.models import load_engine, new_session
from katpilot.profiles import get_profile
from katpilot.session import ChatSession, ThinkControls

KEY = "sk-test-remote-7f3a9c"
START_TIMEOUT_S = 60
KATPILOT = [sys.executable, "-m", "katpilot"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=32)
QUESTION = "What is the capital of France?"
# Two log-probabilities closer than this are a tie that float differences between two llama.cpp
# processes (kernels, batch shapes) may break either way; measured differences are ~1e-4 nats.
NEAR_TIE_NATS = 0.05


# -- a real llama-cpp-python server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> str:
        return "openai+" + self.url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_llama_server(model_path: Path, api_key: str | None = KEY) -> LlamaServer:
    """`python -m llama_cpp.server` on a free loopback port; waits until /v1/models answers."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
    ]
    if api_key:
        cmd += ["--api_key", api_key]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            request = urllib.request.Request(server.url + "/models", headers={"Authorization": f"Bearer {api_key}"})
            with urllib.request.urlopen(request, timeout=2):
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama_cpp.server did not start in {START_TIMEOUT_S}s")


@pytest.fixture(scope="session")
def llama_server(model_path: Path) -> Iterator[LlamaServer]:
    server = start_llama_server(model_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def remote(llama_server: LlamaServer) -> RemoteEngine:
    return RemoteEngine(llama_server.spec, api_key=KEY, n_ctx=2048)


@pytest.fixture(scope="module")
def engine(model_path: Path) -> Iterator[Engine]:
    """The local reference, one thread like the server: on a busy 2-core machine two spinning
    llama.cpp threads per process slow each other down many times over (results do not depend on
    the thread count)."""
    from katpilot.engine.local import LocalEngine

    eng = LocalEngine(model_path, n_ctx=2048, n_threads=1)
    yield eng
    eng.close()


class Recording(Engine):
    """A real engine, passed through, keeping each stream's prompt and token pieces."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.info = engine.info
        self.streams: list[tuple[str, list[str]]] = []

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def continuation_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float] | None:
        return self.engine.continuation_logprobs(prompt, continuations)

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        pieces: list[str] = []
        self.streams.append((prompt, pieces))
        inner = self.engine.stream(prompt, params, cancel, stats)
        try:
            for piece in inner:
                pieces.append(piece)
                yield piece
        finally:
            inner.close()  # type: ignore[attr-defined]


def session(engine: Engine, profile: str) -> ChatSession:
    info = engine.info
    return ChatSession(engine, get_profile(profile, info.chat_template, info.tags_in_vocab), "You are helpful.", GREEDY)


def summary(engine: Engine, profile: str, question: str, controls: ThinkControls) -> dict[str, object]:
    r = session(engine, profile).ask(question, controls)
    s = r.stats
    return {
        "judge": r.judge,
        "think": r.think,
        "answer": r.answer,
        "mode": r.mode,
        "decided_by": r.decided_by,
        "notices": r.notices,
        "tokens": (s.completion_tokens, s.judge_tokens, s.think_tokens, s.answer_tokens),
        "p_on": r.p_on,
        "finish": s.finish_reason,
    }


def assert_agree(
    local: Recording, remote: Recording, local_summary: dict[str, object], remote_summary: dict[str, object]
) -> None:
    """The same response, or one that parts from the local one only at a near tie of the local engine."""
    lp, rp = local_summary.pop("p_on"), remote_summary.pop("p_on")
    assert (lp is None) == (rp is None)
    if lp is not None:
        assert abs(lp - rp) < 1e-3  # type: ignore[operator]
    if remote_summary == local_summary:
        return
    for (prompt, mine), (sent, theirs) in zip(local.streams, remote.streams, strict=False):
        if (prompt, mine) == (sent, theirs):
            continue
        assert sent == prompt, "the server was sent another prompt than the local engine"
        k = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), min(len(mine), len(theirs)))
        eos = local.info.eos_token
        options = [mine[k] if k < len(mine) else eos, theirs[k] if k < len(theirs) else eos]
        scores = local.engine.continuation_logprobs(prompt + "".join(mine[:k]), options)
        assert scores is not None
        gap = abs(scores[0] - scores[1])
        assert gap < NEAR_TIE_NATS, (
            f"the engines part at token {k} ({options}) where the local engine is sure ({gap:.3f} nats)"
        )
        return
    pytest.fail(f"the responses differ but every stream agreed: {local_summary} != {remote_summary}")


# -- selection ------------------------------------------------------------------------------------


def test_parse_spec_forms() -> None:
    spec = parse_spec("openai+http://gpu-box:8000/v1#kat-40b")
    assert (spec.base_url, spec.model, spec.root) == ("http://gpu-box:8000/v1", "kat-40b", "http://gpu-box:8000")
    assert parse_spec("openai+https://example.org/v1/").base_url == "https://example.org/v1"
    assert parse_spec("openai+https://example.org/v1").model is None
    with pytest.raises(KatpilotError, match="credentials"):
        parse_spec("openai+http://user:pw@host/v1#m")
    with pytest.raises(KatpilotError, match="no host"):
        parse_spec("openai+http:///v1#m")
    for port in ("notaport", "99999"):
        with pytest.raises(KatpilotError, match="is not a number from 0 to 65535"):
            parse_spec(f"openai+http://127.0.0.1:{port}/v1#m")


def test_load_engine_picks_remote_from_env_and_alias(
    llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch, katpilot_home: Path
) -> None:
    monkeypatch.setenv("KATPILOT_MODEL", llama_server.spec)
    monkeypatch.setenv("KATPILOT_API_KEY", KEY)
    engine = load_engine(load_settings().settings)
    assert isinstance(engine, RemoteEngine)
    assert engine.info.chat_template and engine.info.eos_token == "<|im_end|>"
    # An alias in [models] may name a server; OPENAI_API_KEY is the fallback key.
    monkeypatch.delenv("KATPILOT_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("KATPILOT_MODEL", "far")
    from katpilot import paths

    paths.config_file().parent.mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text(f'[models]\nfar = "{llama_server.spec}"\n')
    assert isinstance(load_engine(load_settings().settings), RemoteEngine)


def test_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATPILOT_API_KEY", KEY)
    shown = render_show(load_settings())
    assert KEY not in shown and "api_key" in shown


# -- the same answers as the local engine ---------------------------------------------------------


@pytest.mark.parametrize("profile", ["kat", "think", "plain"])
@pytest.mark.parametrize("think", ["auto", "on", "off"])
def test_session_matches_local_engine(engine: Engine, remote: RemoteEngine, profile: str, think: str) -> None:
    controls = ThinkControls(think=think, budget=5)  # type: ignore[arg-type]
    local, far = Recording(engine), Recording(remote)
    assert_agree(local, far, summary(local, profile, QUESTION, controls), summary(far, profile, QUESTION, controls))


def test_p_on_matches_local_engine_at_the_decision_point(engine: Engine, remote: RemoteEngine) -> None:
    prompt = session(engine, "kat").build_prompt("Is 17 a prime number?", "auto", 40)[0]
    prompt += "<judge>\nA simple fact check.\n</judge>\n"
    continuations = ["<think_on>", "<think_off>"]
    local = engine.continuation_logprobs(prompt, continuations)
    far = remote.continuation_logprobs(prompt, continuations)
    assert local is not None and far is not None
    assert max(abs(a - b) for a, b in zip(local, far, strict=True)) < 1e-3
    # Asked again (the server's cache now holds other text): the same values.
    again = remote.continuation_logprobs(prompt, continuations)
    assert again is not None and max(abs(a - b) for a, b in zip(far, again, strict=True)) < 1e-6


def test_count_tokens_matches_local_engine(engine: Engine, remote: RemoteEngine) -> None:
    text = "<|im_start|>user\ndef f(x):\n    return x  # ünïcode<|im_end|>\n"
    assert remote.count_tokens(text) == engine.count_tokens(text)
    assert not remote.token_counts_estimated


def test_ask_cli_gives_the_remote_engines_answer(llama_server: LlamaServer) -> None:
    """`katpilot ask --model openai+http://...` answers what the remote engine answers in-process."""
    flags = {
        "think": "off",
        "temperature": 0.0,
        "max_tokens": 30,
        "n_ctx": 2048,
        "model": llama_server.spec,
        "api_key": KEY,
    }
    args = [
        *KATPILOT,
        "ask",
        "--json",
        "--model",
        llama_server.spec,
        "--think",
        "off",
        "--temperature",
        "0",
        "--max-tokens",
        "30",
        "--n-ctx",
        "2048",
        "What is 2+2?",
    ]
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KATPILOT_API_KEY": KEY},
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr
    far = json.loads(result.stdout)
    settings = load_settings(flags).settings
    expected = new_session(load_engine(settings), settings).ask("What is 2+2?", ThinkControls(think="off"))
    assert far["answer"] == expected.answer and far["answer"]
    assert far["stats"]["completion_tokens"] == expected.stats.completion_tokens


def test_models_lists_the_servers_models(llama_server: LlamaServer, model_path: Path) -> None:
    env = {**os.environ, "KATPILOT_MODEL": llama_server.spec, "KATPILOT_API_KEY": KEY}
    result = subprocess.run(
        [*KATPILOT, "models"], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("*") and str(model_path) in first and "remote" in first
    assert KEY not in result.stdout + result.stderr


# -- streaming controls ---------------------------------------------------------------------------


def test_stream_length_and_cancel(remote: RemoteEngine, engine: Engine) -> None:
    prompt = session(engine, "plain").build_prompt("Write a long poem about the sea.", "off", 64)[0]
    stats = StreamStats()
    pieces = list(remote.stream(prompt, SamplingParams(temperature=0, max_tokens=7), None, stats))
    assert (stats.generated_tokens, stats.finish_reason, len(pieces)) == (7, "length", 7)
    assert stats.prompt_tokens == engine.count_tokens(prompt)
    cancel, stats = threading.Event(), StreamStats()
    got = []
    for piece in remote.stream(prompt, SamplingParams(temperature=0, max_tokens=500), cancel, stats):
        got.append(piece)
        if len(got) == 3:
            cancel.set()
    assert stats.finish_reason == "cancelled" and len(got) == 3
    # The server is free again at once: the closed stream stopped its generation.
    assert len(list(remote.stream(prompt, SamplingParams(temperature=0, max_tokens=2)))) == 2


# -- failures: one clear line, never a hang -------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_connection_refused_is_one_line() -> None:
    spec = f"openai+http://127.0.0.1:{free_port()}/v1#m"
    started = time.monotonic()
    with pytest.raises(EngineError, match="connection refused"):
        RemoteEngine(spec)
    assert time.monotonic() - started < 30
    result = subprocess.run(
        [*KATPILOT, "ask", "--model", spec, "hi"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert_one_line_error(result, "cannot reach the model server", "connection refused")


def test_wrong_key_is_one_line_and_never_printed(llama_server: LlamaServer) -> None:
    wrong = "sk-wrong-key-123456"
    with pytest.raises(EngineError, match="refused the API key") as err:
        RemoteEngine(llama_server.spec, api_key=wrong)
    assert wrong not in err.value.one_line()
    env = {**os.environ, "KATPILOT_API_KEY": wrong}
    result = subprocess.run(
        [*KATPILOT, "ask", "--model", llama_server.spec, "hi"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(result, "refused the API key", "api_key")
    assert wrong not in result.stderr


def test_server_killed_mid_stream(model_path: Path, engine: Engine) -> None:
    server = start_llama_server(model_path, api_key=None)
    try:
        far = RemoteEngine(server.spec, n_ctx=2048)
        prompt = session(engine, "plain").build_prompt("Write a long poem about the sea.", "off", 64)[0]
        got = []
        with pytest.raises(EngineError, match=r"closed the stream mid-answer|failed mid-answer|cannot reach"):
            for piece in far.stream(prompt, SamplingParams(temperature=0, max_tokens=1000)):
                got.append(piece)
                if len(got) == 3:
                    server.process.kill()
        assert len(got) >= 3
    finally:
        server.stop()


# -- fake servers: only to make a failure happen on purpose ---------------------------------------


@contextmanager
def fake_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"openai+http://127.0.0.1:{httpd.server_address[1]}/v1#fake"
    finally:
        httpd.shutdown()
        httpd.server_close()


PROPS = {
    "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
    "bos_token": "",
    "eos_token": "<|im_end|>",
    "default_generation_settings": {"n_ctx": 1024},
}


class _Base(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def send_json(self, status: int, doc: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/props":
            self.send_json(200, PROPS)
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/completions":
            self.send_json(404, {"error": "not found"})
        else:
            self.completions()

    def completions(self) -> None:
        raise NotImplementedError

    def start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def event(self, text: str, finish: str | None = None) -> None:
        self.wfile.write(
            b"data: " + json.dumps({"choices": [{"text": text, "finish_reason": finish}]}).encode() + b"\n\n"
        )
        self.wfile.flush()


def test_not_openai_compatible_is_one_line() -> None:
    class Html(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with fake_server(Html) as spec:
        with pytest.raises(EngineError, match="does not look OpenAI-compatible"):
            RemoteEngine(spec.split("#")[0])  # no model named: GET /v1/models must answer
        result = subprocess.run(
            [*KATPILOT, "ask", "--model", spec, "hi"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert_one_line_error(result, "OpenAI-compatible")


def test_retries_on_429_then_streams_with_estimated_counts() -> None:
    calls: list[int] = []

    class Busy(_Base):
        def completions(self) -> None:
            calls.append(1)
            if len(calls) < 3:
                self.send_json(429, {"error": {"message": "busy"}}, {"Retry-After": "0.1"})
                return
            self.start_events()
            for word in ("Hello", " there"):
                self.event(word)
            self.event("", "stop")
            self.wfile.write(b"data: [DONE]\n\n")

    with fake_server(Busy) as spec:
        far = RemoteEngine(spec, n_ctx=4096)
        assert far.info.n_ctx == 1024  # the server's /props
        stats = StreamStats()
        assert "".join(far.stream("hi", SamplingParams(max_tokens=5), None, stats)) == "Hello there"
        assert stats.finish_reason == "stop" and len(calls) == 3
        assert far.token_counts_estimated
        assert far.continuation_logprobs("hi", ["a", "b"]) is None  # no tokenizer: unavailable, not invented


def test_silent_server_times_out() -> None:
    class Silent(_Base):
        def completions(self) -> None:
            self.start_events()
            self.event("Hel")
            time.sleep(5)

    with fake_server(Silent) as spec:
        far = RemoteEngine(spec, read_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(EngineError, match="stopped sending tokens"):
            list(far.stream("hi", SamplingParams(max_tokens=5)))
        assert time.monotonic() - started < 4


def test_dropped_stream_from_fake_server() -> None:
    class Drop(_Base):
        def completions(self) -> None:
            self.start_events()
            self.event("Hel")
            self.close_connection = True

    with fake_server(Drop) as spec, pytest.raises(EngineError, match="closed the stream mid-answer"):
        list(RemoteEngine(spec).stream("hi", SamplingParams(max_tokens=5)))


def test_session_through_remote_new_session(llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATPILOT_MODEL", llama_server.spec)
    monkeypatch.setenv("KATPILOT_API_KEY", KEY)
    monkeypatch.setenv("KATPILOT_TEMPERATURE", "0")
    settings = load_settings().settings
    response = new_session(load_engine(settings), settings).ask("What is 2+2?", ThinkControls(think="off"))
    assert response.answer and response.decided_by == "user"


def test_lsp_completes_and_answers_on_the_remote_engine(llama_server: LlamaServer, tmp_path: Path) -> None:
    """`katpilot lsp --model openai+http://...`: the completion the remote engine gives for the same
    cursor and repository context, and answers from the server's model.

    The prompt holds the definitions the index finds near the cursor (`square` from calc.py), so
    the test waits for the first index build (a code action waits for it) before completing: the
    completion raced the index build before, and its prompt depended on which came first.
    """
    import threading

    from lsp_helpers import CALC_PY, Client
    from lsprotocol import types

    from katpilot.config import load_settings
    from katpilot.index.repo import RepoIndex
    from lsp import generate
    from lsp.work import describe_definition

    root = tmp_path / "ws"
    root.mkdir()
    (root / "calc.py").write_text(CALC_PY)
    home = tmp_path / "home"
    home.mkdir()
    options = {
        "model": llama_server.spec,
        "n_ctx": 2048,
        "debounce_ms": 0,
        "completion_max_tokens": 24,
        "max_tokens": 32,
        "think": "off",
    }
    client = Client(root, home, init_options=options, env={"KATPILOT_API_KEY": KEY})
    text = "def square(x):\n    "
    try:
        calc = client.open(root / "calc.py", CALC_PY)
        inside_mean = types.Range(types.Position(6, 8), types.Position(6, 8))
        context = types.CodeActionContext(diagnostics=[])
        assert client.request(
            types.TEXT_DOCUMENT_CODE_ACTION,
            types.CodeActionParams(types.TextDocumentIdentifier(calc), inside_mean, context),
        )
        uri = client.open(root / "scratch.py", text)
        result = client.inline(uri, 1, 4)
        answer = client.request(
            types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams("katpilot.ask", [{"question": QUESTION}])
        )
    finally:
        assert client.close() == 0, client.server_log()
    index = RepoIndex(root)
    index.refresh()
    repo_context = [describe_definition(d) for d in index.definitions_near(root / "scratch.py", 1, text=text)]
    assert repo_context == ["calc.py:12: def square(x):"]
    far = RemoteEngine(llama_server.spec, api_key=KEY, n_ctx=2048)
    settings = load_settings({"n_ctx": 2048}).settings
    ctx = generate.cursor_context(far, text, len(text), "scratch.py", "python", repo_context, 24)
    expected = generate.complete(far, settings, ctx, generate.completion_sampling(settings, 24), threading.Event())
    assert expected.strip()
    assert result.items and result.items[0].insert_text == expected
    assert answer["model"] == far.info.name  # the server's model answered
    assert answer["answer"].strip()
    assert "no repository context" not in " ".join(m.message for m in client.messages)


def test_eval_runs_parallel_requests_on_a_remote_server(llama_server: LlamaServer, tmp_path: Path) -> None:
    """`katpilot eval --jobs 2` on a server: one engine per job, every item evaluated exactly once."""
    args = ["eval", "--suite", "arithmetic", "--limit", "4", "--think", "off,auto", "--max-tokens", "16"]
    result = subprocess.run(
        [*KATPILOT, *args, "--model", llama_server.spec, "--jobs", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "KATPILOT_API_KEY": KEY},
    )
    assert result.returncode == 0, result.stderr
    assert "--jobs applies to remote servers" not in result.stderr
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    keys = sorted((r["item"], r["condition"]) for r in records)
    assert keys == sorted({(r["item"], c) for r in records for c in ("off", "auto@0.5")}) and len(keys) == 8
    assert all(r["tokens"]["completion"] > 0 for r in records)
