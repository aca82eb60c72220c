"""The remote engine: a model served elsewhere, spoken to over the OpenAI HTTP API.

Why `/v1/completions` with a raw prompt and not `/v1/chat/completions`: the session renders the
chat template itself and prefills the assistant turn (`<judge>`, `<think_on>`, a closed think
block), stops the stream at the decision point or a spent budget and continues the same text.
Only a raw-prompt endpoint lets every one of those steps work exactly as with the local engine.

What a raw prompt needs, and where it comes from (first that answers wins):
- the chat template and BOS/EOS: see `remote_info`;
- token counts: `/extras/tokenize` (llama-cpp-python), `/tokenize` (llama.cpp, vLLM), else an
  estimate of 3 characters per token (`terms.estimate_tokens`; marked in `info` so nobody
  mistakes it for a count);
- p(on): `/v1/completions` with `echo` + `logprobs` over prompt + continuation, summing the
  continuation's token log-probabilities; a server that does not return them gives None (never
  an invented value).

The rest of the remote side, one job per module: `server_url` (the --model URL and the key),
`http_client` (requests, retries, errors), `sse` (reading a streamed answer), `remote_info`
(discovery). The names callers import from here (`RemoteEngine`, `parse_spec`, `is_remote`,
`api_key_from`, `list_models`, ...) are re-exported so that `katpilot.engine.remote` stays the one
import for front ends.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from katpilot.engine.base import Engine, SamplingParams, StreamStats
from katpilot.engine.http_client import READ_TIMEOUT_S, Client, RemoteStatusError, is_missing_endpoint
from katpilot.engine.remote_info import list_models, remote_model_info
from katpilot.engine.server_url import SCHEMES, RemoteSpec, api_key_from, is_remote, parse_spec
from katpilot.engine.sse import sse_choices
from katpilot.errors import ContextOverflowError, EngineError
from katpilot.terms import estimate_tokens

__all__ = [
    "SCHEMES",
    "RemoteEngine",
    "RemoteSpec",
    "RemoteStatusError",
    "api_key_from",
    "is_remote",
    "list_models",
    "parse_spec",
]

SETTLE_BACK_CHARS = 16  # step back this far from the shared prefix: >= 2 tokens to re-evaluate
SENTINELS = ("\u00a4", "\u00a7")  # a character that ends the settling prompt (one differs from ours)


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
        self._client = Client(self.spec, api_key, read_timeout)
        served = list_models(self.spec, self._client)  # also proves the URL, the key and the API
        if not self.spec.model and not served:
            raise EngineError(f"the server at {self.spec.base_url} serves no model", "load a model on the server")
        self.model = self.spec.model or served[0]
        self._tokenizer: str | None = None  # which tokenize endpoint answers; "estimate" if none
        self._counts: dict[str, int] = {}  # the last few counts (the session counts then streams)
        self._logprobs_ok = True
        self._last_prompt: str | None = None  # what the server's KV cache was last filled from
        self.info = remote_model_info(self._client, self.model, n_ctx, template_gguf)

    # -- discovery --------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The ids of the models the server serves (GET /v1/models)."""
        return list_models(self.spec, self._client)

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
        for kind in [self._tokenizer] if self._tokenizer else ["extras", "llama.cpp", "vllm"]:
            try:
                ids = self._tokenize_with(kind, text)
            except (RemoteStatusError, EngineError) as exc:
                if self._tokenizer or not is_missing_endpoint(exc):
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
            doc = self._client.json(
                "POST", "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}
            )
        ids = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(ids, list):
            return None
        return [t["id"] if isinstance(t, dict) else int(t) for t in ids]

    def _tokenize_count(self, text: str) -> int:
        ids = self.tokenize(text)
        if ids is None:  # the server cannot tokenize: estimate (token_counts_estimated says so)
            return estimate_tokens(text)
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
        same = len(os.path.commonprefix([last, prompt]))  # noqa: RUF071 - prompts, not paths: a character prefix is meant
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
    ) -> Generator[str, None, None]:
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
            for text, finish in sse_choices(resp, self._client.spec.base_url):
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
                raise EngineError(
                    "no room left in the context window to score the think decision", "raise n_ctx or shorten the input"
                )
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
