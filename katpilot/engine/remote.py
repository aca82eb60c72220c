"""The remote engine: a model served elsewhere, spoken to over the OpenAI HTTP API.

Why `/v1/completions` with a raw prompt and not `/v1/chat/completions`: the session renders the
chat template itself and prefills the assistant turn (`<judge>`, `<think_on>`, a closed think
block), stops the stream at the decision point or a spent budget and continues the same text.
Only a raw-prompt endpoint lets every one of those steps work exactly as with the local engine.

What a raw prompt needs, and where it comes from (first that answers wins):
- the chat template and BOS/EOS: the server's `/props` (llama.cpp's own server), else a local GGUF
  named by the `remote_gguf` setting, else the served model id when it is a readable local GGUF
  (llama-cpp-python's server names models by their path); otherwise a one-line error says so;
- token counts: `/extras/tokenize` (llama-cpp-python), `/tokenize` (llama.cpp, vLLM), else an
  estimate of 3 characters per token (marked in `info` so nobody mistakes it for a count);
- p(on): `/v1/completions` with `echo` + `logprobs` over prompt + continuation, summing the
  continuation's token log-probabilities; a server that does not return them gives None (never
  an invented value).

Plain `http.client` (no new dependency): one connection per request, closed to cancel a stream.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from katpilot.engine.base import Engine, ModelInfo, SamplingParams, StreamStats
from katpilot.errors import ContextOverflowError, EngineError, KatpilotError
from katpilot.gguf_file import AUTOTHINK_TAGS as _AUTOTHINK_TAGS

SCHEMES = ("openai+http://", "openai+https://")
RETRY_STATUSES = (429, 503)
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # back-off between attempts on 429/503
MAX_RETRY_AFTER_S = 30.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # the longest silence between two streamed tokens before giving up
CHARS_PER_TOKEN_ESTIMATE = 3
SETTLE_BACK_CHARS = 16  # step back this far from the shared prefix: >= 2 tokens to re-evaluate
SENTINELS = ("\u00a4", "\u00a7")  # a character that ends the settling prompt (one differs from ours)
KEY_FIX = "set api_key in the config file, or KATPILOT_API_KEY / OPENAI_API_KEY"


def is_remote(spec: str | None) -> bool:
    """Whether a --model value names a server rather than a file."""
    return spec is not None and spec.startswith(SCHEMES)


@dataclass(frozen=True)
class RemoteSpec:
    """`openai+http://host:port/v1#model-name`, taken apart."""

    base_url: str  # http(s)://host:port/v1, no trailing slash
    model: str | None  # the served model's id; None = the server's first

    @property
    def root(self) -> str:
        """The server's root, where non-OpenAI extras live (`/props`, `/tokenize`)."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url


def parse_spec(spec: str) -> RemoteSpec:
    """Parse a remote --model value; a malformed one is a one-line error."""
    if not is_remote(spec):
        raise KatpilotError(f"not a remote model: {spec}", "use openai+http://host:port/v1#model-name")
    url, _, model = spec[len("openai+") :].partition("#")
    parts = urlsplit(url)
    if not parts.hostname:
        raise KatpilotError(f"no host in the remote model {spec}", "use openai+http://host:port/v1#model-name")
    if parts.username or parts.password:
        raise KatpilotError("the remote model URL must not carry credentials", f"remove them from --model; {KEY_FIX}")
    return RemoteSpec(url.rstrip("/"), model or None)


def api_key_from(setting: str | None) -> str | None:
    """The configured key (config/KATPILOT_API_KEY via settings), else OPENAI_API_KEY."""
    return setting or os.environ.get("OPENAI_API_KEY") or None


class _Client:
    """Requests to one server: retries on 429/503, every failure a one-line EngineError."""

    def __init__(self, spec: RemoteSpec, api_key: str | None, read_timeout: float) -> None:
        self.spec = spec
        self._key = api_key
        self._read_timeout = read_timeout
        parts = urlsplit(spec.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = urlsplit(spec.root).path.rstrip("/")

    def __repr__(self) -> str:  # never the key
        return f"_Client({self.spec.base_url!r})"

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=CONNECT_TIMEOUT_S, context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT_S)

    def _headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def open(self, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request (path relative to the server root), retrying 429/503 with back-off."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        for attempt in range(len(RETRY_DELAYS_S) + 1):
            conn = self._connect()
            try:
                conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(self._read_timeout)
                conn.request(method, self._prefix + path, body, self._headers(body))
                resp = conn.getresponse()
            except (ConnectionRefusedError, socket.gaierror) as exc:
                conn.close()
                raise EngineError(
                    f"cannot reach the model server at {self.spec.base_url}: {_reason(exc)}",
                    "start the server, or check host and port in --model",
                ) from None
            except (TimeoutError, socket.timeout):
                conn.close()
                raise EngineError(
                    f"the model server at {self.spec.base_url} did not answer in time",
                    "check that the server is up and not overloaded",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise EngineError(
                    f"the connection to the model server at {self.spec.base_url} failed: {_reason(exc)}",
                    "check that --model points at an OpenAI-compatible server (http vs https, port)",
                ) from None
            if resp.status in RETRY_STATUSES and attempt < len(RETRY_DELAYS_S):
                delay = _retry_after(resp) or RETRY_DELAYS_S[attempt]
                conn.close()
                time.sleep(delay)
                continue
            if resp.status >= 400:
                detail = _error_detail(resp)
                conn.close()
                raise _status_error(self.spec.base_url, method, path, resp.status, detail)
            return conn, resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def json(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """One request whose answer is a JSON document."""
        conn, resp = self.open(method, path, payload)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(f"the model server at {self.spec.base_url} broke off its answer: {_reason(exc)}", "retry; check the server's log") from None
        finally:
            conn.close()
        try:
            return json.loads(data)
        except ValueError:
            raise _not_openai(self.spec.base_url, f"{method} {path} did not return JSON") from None


def _is_missing_endpoint(exc: EngineError) -> bool:
    """An answer that means "no such feature here" (404, 405, 400, 422, 500, not JSON)."""
    return isinstance(exc, RemoteStatusError) or "does not look OpenAI-compatible" in exc.message


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return str(exc) or type(exc).__name__


def _retry_after(resp: http.client.HTTPResponse) -> float | None:
    value = resp.getheader("Retry-After")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value else None
    except ValueError:
        return None


def _error_detail(resp: http.client.HTTPResponse) -> str:
    """The server's own error message, short, on one line."""
    try:
        raw = resp.read(4096)
        doc = json.loads(raw)
        err = doc.get("error", doc.get("detail", doc)) if isinstance(doc, dict) else doc
        text = err.get("message", err) if isinstance(err, dict) else err
        text = str(text)
    except (ValueError, OSError, http.client.HTTPException):
        text = ""
    return " ".join(text.split())[:200]


class RemoteStatusError(EngineError):
    """The server answered a request with an HTTP error status (kept for callers that can degrade)."""

    def __init__(self, message: str, fix: str, status: int) -> None:
        super().__init__(message, fix)
        self.status = status


def _not_openai(url: str, why: str) -> EngineError:
    return EngineError(
        f"the server at {url} does not look OpenAI-compatible: {why}",
        "point --model at the server's /v1 base, e.g. openai+http://host:8000/v1#model",
    )


def _status_error(url: str, method: str, path: str, status: int, detail: str) -> EngineError:
    said = f": {detail}" if detail else ""
    if status in (401, 403):
        return EngineError(f"the model server at {url} refused the API key (HTTP {status})", KEY_FIX)
    if status in RETRY_STATUSES:
        return EngineError(f"the model server at {url} stayed busy (HTTP {status}) after retries", "retry later or lower the load")
    if status in (404, 405):
        return RemoteStatusError(_not_openai(url, f"{method} {path} gave HTTP {status}").message, _not_openai(url, "").fix, status)
    return RemoteStatusError(f"the model server at {url} answered {method} {path} with HTTP {status}{said}", "check the server's log", status)


class RemoteEngine(Engine):
    """A model on an OpenAI-compatible server, driven through raw-prompt completions."""

    def __init__(
        self,
        spec: str | RemoteSpec,
        api_key: str | None = None,
        n_ctx: int = 4096,
        template_gguf: str | Path | None = None,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        self._client = _Client(self.spec, api_key, read_timeout)
        served = list_models(self.spec, self._client)  # also proves the URL, the key and the API
        if not self.spec.model and not served:
            raise EngineError(f"the server at {self.spec.base_url} serves no model", "load a model on the server")
        self.model = self.spec.model or served[0]
        self._tokenizer: str | None = None  # which tokenize endpoint answers; "estimate" if none
        self._counts: dict[str, int] = {}  # the last few counts (the session counts then streams)
        self._logprobs_ok = True
        self._last_prompt: str | None = None  # what the server's KV cache was last filled from
        self.info = self._model_info(n_ctx, template_gguf)

    # -- discovery --------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The ids of the models the server serves (GET /v1/models)."""
        return list_models(self.spec, self._client)

    def _model_info(self, n_ctx: int, template_gguf: str | Path | None) -> ModelInfo:
        props = self._props()
        name = self.model.rsplit("/", 1)[-1]
        if props.get("chat_template"):
            settings = props.get("default_generation_settings") or {}
            server_ctx = settings.get("n_ctx") or props.get("n_ctx") or n_ctx
            return ModelInfo(
                name=name, path=None, architecture="remote", chat_template=props["chat_template"],
                bos_token=props.get("bos_token") or "", eos_token=props.get("eos_token") or "",
                n_ctx=min(n_ctx, int(server_ctx)),
            )
        source = Path(template_gguf).expanduser() if template_gguf else None
        if source is None and self.model.endswith(".gguf") and Path(self.model).is_file():
            source = Path(self.model)
        if source is None:
            raise EngineError(
                f"the server at {self.spec.base_url} does not report model {self.model!r}'s chat template",
                "set remote_gguf (config or KATPILOT_REMOTE_GGUF) to a local GGUF of the same model",
            )
        if source.suffix == ".json":
            return _info_from_tokenizer_config(name, source, n_ctx)
        from katpilot.gguf_file import read_gguf, require_chat_template

        summary = read_gguf(source)
        require_chat_template(summary)
        return ModelInfo(
            name=name, path=None, architecture=summary.architecture, chat_template=summary.chat_template or "",
            bos_token=summary.bos_token or "", eos_token=summary.eos_token or "",
            n_ctx=min(n_ctx, summary.context_length or n_ctx), tags_in_vocab=summary.tags_in_vocab,
            fim_tokens=summary.fim_tokens,
        )

    def _props(self) -> dict[str, Any]:
        """llama.cpp server's /props (template, BOS/EOS, context), or {} where there is none."""
        try:
            doc = self._client.json("GET", "/props")
        except EngineError as exc:
            if "API key" in exc.message:
                raise
            return {}
        return doc if isinstance(doc, dict) else {}

    # -- tokens -----------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        if text in self._counts:
            return self._counts[text]
        count = self._tokenize_count(text)
        if len(self._counts) > 8:
            self._counts.clear()
        self._counts[text] = count
        return count

    def tokenize(self, text: str) -> list[int] | None:
        """Token ids as the server splits `text` (special tokens parsed), or None if it cannot say."""
        for kind in ([self._tokenizer] if self._tokenizer else ["extras", "llama.cpp", "vllm"]):
            try:
                ids = self._tokenize_with(kind, text)
            except (RemoteStatusError, EngineError) as exc:
                if self._tokenizer or not _is_missing_endpoint(exc):
                    raise
                continue
            if ids is not None:
                self._tokenizer = kind
                return ids
        self._tokenizer = "estimate"
        return None

    def _tokenize_with(self, kind: str, text: str) -> list[int] | None:
        if kind == "estimate":
            return None
        if kind == "extras":
            doc = self._client.json("POST", "/extras/tokenize", {"input": text})
        elif kind == "llama.cpp":
            doc = self._client.json("POST", "/tokenize", {"content": text, "add_special": False, "parse_special": True})
        else:
            doc = self._client.json("POST", "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False})
        ids = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(ids, list):
            return None
        return [t["id"] if isinstance(t, dict) else int(t) for t in ids]

    def _tokenize_count(self, text: str) -> int:
        ids = self.tokenize(text)
        if ids is None:  # the server cannot tokenize: estimate (token_counts_estimated says so)
            return max(1, math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)) if text else 0
        return len(ids)

    @property
    def token_counts_estimated(self) -> bool:
        """True when the server offers no tokenizer and counts are estimates."""
        return self._tokenizer == "estimate"

    # -- the server's KV cache -------------------------------------------------------------------

    @property
    def _batch_sensitive(self) -> bool:
        """llama-cpp-python's server: llama.cpp logits differ between 1-token and batched decodes.

        It reuses any cached prefix, including tokens it sampled one at a time, and may leave the
        prompt's last token to a one-token batch; the local engine never does either (see
        `LocalEngine._batched_upto`). Without care, the same prompt would give another p(on) or
        greedy answer remotely than locally, depending on what the server's cache held.
        """
        return self._tokenizer == "extras"

    def _settle_cache(self, prompt: str) -> None:
        """Cut the server's cache back to the part of our last prompt that was evaluated in a batch.

        A one-token request (our prompt's safe prefix + a sentinel) makes the server keep only that
        prefix; the real request then evaluates everything after it as one batch, as locally.
        """
        if not self._batch_sensitive:
            return
        last = self._last_prompt or ""
        same = len(os.path.commonprefix([last, prompt]))
        cut = max(0, same - SETTLE_BACK_CHARS)
        sentinel = next(s for s in SENTINELS if not prompt.startswith(s, cut))
        payload = {"model": self.model, "prompt": prompt[:cut] + sentinel, "max_tokens": 1, "temperature": 0}
        self._client.json("POST", "/v1/completions", payload)
        self._last_prompt = prompt

    # -- generation -------------------------------------------------------------------------------

    def _payload(self, prompt: str, params: SamplingParams, max_tokens: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "min_p": params.min_p,
            "repeat_penalty": params.repeat_penalty,
            "repetition_penalty": params.repeat_penalty,  # vLLM's name
            "skip_special_tokens": False,  # vLLM: AutoThink tags may be special tokens
            "stream": True,
        }
        bos = self.info.bos_token
        if bos:  # the rendered template may already hold BOS: do not let the server add another
            payload["add_special_tokens"] = not prompt.startswith(bos)
        if params.seed is not None:
            payload["seed"] = params.seed
        return payload

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        stats = stats if stats is not None else StreamStats()
        n_prompt = self.count_tokens(prompt)
        n_ctx = self.info.n_ctx
        if n_prompt >= n_ctx:
            raise ContextOverflowError(
                f"the prompt is {n_prompt} tokens but the context window is {n_ctx}",
                "shorten the input or raise n_ctx (--n-ctx, config key n_ctx)",
            )
        stats.prompt_tokens = n_prompt
        max_tokens = min(params.max_tokens, n_ctx - n_prompt)
        self._settle_cache(prompt)
        started = time.perf_counter()
        conn, resp = self._client.open("POST", "/v1/completions", self._payload(prompt, params, max_tokens))
        try:
            for text, finish in _sse_choices(resp, self._client.spec.base_url):
                if stats.generated_tokens == 0 and text:
                    stats.prompt_eval_s = time.perf_counter() - started
                if cancel is not None and cancel.is_set():
                    stats.finish_reason = "cancelled"
                    return
                if text:
                    stats.generated_tokens += 1
                    yield text
                if finish is not None:
                    capped = finish == "length" and max_tokens < params.max_tokens
                    stats.finish_reason = "context" if capped else ("length" if finish == "length" else "stop")
                    return
            stats.finish_reason = "stop"
        finally:
            if stats.finish_reason is None:
                stats.finish_reason = "cancelled"  # the consumer stopped reading
            conn.close()  # closing the HTTP stream is what stops the server generating

    # -- scoring ----------------------------------------------------------------------------------

    def continuation_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float] | None:
        """Sum of the server's echoed log-probabilities over each continuation's tokens."""
        if not self._logprobs_ok:
            return None
        base = self.tokenize(prompt)
        if base is None:
            self._logprobs_ok = False  # without token counts the continuation cannot be located
            return None
        results = []
        for cont in continuations:
            full = self.tokenize(prompt + cont) or []
            n_cont = len(full) - len(base)
            if n_cont < 1:
                return None
            if len(full) + 1 > self.info.n_ctx:
                raise EngineError("no room left in the context window to score the think decision", "raise n_ctx or shorten the input")
            score = self._echo_logprob(prompt + cont, n_cont)
            if score is None:
                self._logprobs_ok = False
                return None
            results.append(score)
        return results

    def _echo_logprob(self, text: str, n_last: int) -> float | None:
        self._settle_cache(text)
        payload = {"model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1}
        try:
            doc = self._client.json("POST", "/v1/completions", payload)
        except RemoteStatusError:
            return None  # the server refuses echo/logprobs: p(on) is unavailable, not an error
        try:
            choice = doc["choices"][0]
            values = choice["logprobs"]["token_logprobs"]
            generated = int(doc.get("usage", {}).get("completion_tokens", 1))
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        prompt_part = values[: len(values) - generated] if generated else values
        tail = prompt_part[-n_last:]
        if len(tail) != n_last or any(v is None for v in tail):
            return None
        return float(sum(tail))

    def close(self) -> None:
        """Nothing held: every request has its own connection."""


def _info_from_tokenizer_config(name: str, path: Path, n_ctx: int) -> ModelInfo:
    """A Hugging Face tokenizer_config.json (what vLLM serves from) as the template source."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KatpilotError(f"cannot read {path}: {exc}", "set remote_gguf to a GGUF or a tokenizer_config.json") from None

    def token(key: str) -> str:
        value = doc.get(key) or ""
        return str(value.get("content", "")) if isinstance(value, dict) else str(value)

    template = doc.get("chat_template")
    if isinstance(template, list):  # the named-templates form: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if not template:
        raise KatpilotError(f"{path} has no chat_template", "set remote_gguf to a file of the same model that has one")
    added = doc.get("added_tokens_decoder") or {}
    tags = frozenset(str(t.get("content")) for t in added.values() if isinstance(t, dict)) & _AUTOTHINK_TAGS
    ctx = doc.get("model_max_length")
    limit = int(ctx) if isinstance(ctx, (int, float)) and 0 < ctx < 10**7 else n_ctx
    return ModelInfo(name=name, path=None, architecture="remote", chat_template=str(template),
                     bos_token=token("bos_token"), eos_token=token("eos_token"), n_ctx=min(n_ctx, limit), tags_in_vocab=tags)


def _sse_choices(resp: http.client.HTTPResponse, url: str) -> Iterator[tuple[str, str | None]]:
    """(text, finish_reason) of each server-sent event of a streamed completion."""
    saw_event = False
    while True:
        try:
            line = resp.readline()
        except (TimeoutError, socket.timeout):
            raise EngineError(f"the model server at {url} stopped sending tokens", "check the server; raise its timeout if it is slow") from None
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(f"the model server at {url} closed the stream mid-answer: {_reason(exc)}", "retry; check the server's log") from None
        if not line:
            if not saw_event:
                raise _not_openai(url, "POST /v1/completions returned no event stream")
            raise EngineError(f"the model server at {url} closed the stream mid-answer", "retry; check the server's log")
        line = line.strip()
        if not line or line.startswith(b":") or not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise _not_openai(url, "a streamed event is not JSON") from None
        if isinstance(event, dict) and "error" in event:
            raise EngineError(f"the model server at {url} failed mid-answer: {_error_text(event)}", "check the server's log")
        try:
            choice = event["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise _not_openai(url, "a streamed event is not a completion chunk") from None
        saw_event = True
        yield choice.get("text") or "", choice.get("finish_reason")


def _error_text(event: dict[str, Any]) -> str:
    err = event.get("error")
    return " ".join(str(err.get("message", err) if isinstance(err, dict) else err).split())[:200]


def list_models(spec: RemoteSpec, client: _Client | None = None, api_key: str | None = None) -> list[str]:
    """GET /v1/models: the ids the server serves."""
    client = client or _Client(spec, api_key, CONNECT_TIMEOUT_S * 3)
    doc = client.json("GET", "/v1/models")
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise _not_openai(spec.base_url, "GET /v1/models has no data list")
    return [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]
