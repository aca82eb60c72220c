"""The local engine: a GGUF model run in-process by llama.cpp (llama-cpp-python).

Why our own loop around `Llama.generate` rather than `create_chat_completion`: we need the raw
prompt (the session prefills the assistant turn in the model's format), a cancellation check
before every token, the KV cache kept across calls (a chat's second turn reuses the first turn's
prompt; a continuation after the decision point or a closed think block reuses its prompt and
re-evaluates the tokens sampled one at a time once, as a batch: see `_batched_upto`), and
next-token probabilities at the decision point without `logits_all` (which slows every token).
The last three need llama-cpp-python internals: every such use goes through `llama_compat`.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import numpy as np

from katpilot.engine import llama_compat
from katpilot.engine.base import Engine, ModelInfo, SamplingParams, StreamStats
from katpilot.errors import ContextOverflowError, EngineError, ModelFileError
from katpilot.gguf_file import read_gguf, require_chat_template

# llama.cpp's "random seed" value.
RANDOM_SEED = 0xFFFFFFFF


def default_threads() -> int:
    """Decode threads: all cores on small machines, half (the physical ones, usually) on big ones."""
    cores = os.cpu_count() or 1
    return cores if cores <= 4 else cores // 2


def threads_each(engines: int, threads: int | None = None) -> int:
    """Each engine's share when `engines` llama.cpp instances decode at once (at least one thread):
    `threads` in all, the default when None."""
    return max(1, (threads or default_threads()) // engines)


class LocalEngine(Engine):
    """A GGUF model loaded by llama.cpp, validated first so bad files never reach native code."""

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        lora_path: str | Path | None = None,
    ) -> None:
        """`lora_path`: a GGUF LoRA adapter (`katpilot quant export ADAPTER_DIR`) applied over the model."""
        path = Path(model_path).expanduser()
        summary = read_gguf(path)
        require_chat_template(summary)
        import llama_cpp  # imported here: a bad file must be reported before native code loads

        train_ctx = summary.context_length or n_ctx
        threads = n_threads or default_threads()
        if lora_path is not None and not Path(lora_path).is_file():
            raise ModelFileError(f"LoRA adapter {lora_path} does not exist", "give the path of a GGUF adapter file")
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                lora_path=None if lora_path is None else str(lora_path),
                n_ctx=min(n_ctx, train_ctx),
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(
                f"llama.cpp could not load {path}: {exc}",
                "check that the file is a complete GGUF model of an architecture llama.cpp supports",
            ) from exc
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread inside _exclusive()
        self._vocab = llama_compat.vocab(self.llm)
        self._n_vocab = self.llm.n_vocab()
        # The token ids and text of the last prompt + generation, to continue it without re-tokenizing.
        self._history_bytes = b""
        self._history_tokens: list[int] = []
        # Leading KV-cache tokens that were evaluated in batches of two or more. llama.cpp's logits
        # differ slightly between one-token and batched evaluation, so p(on) is computed only over
        # batched state: the same text then gives the same value whatever the cache held before.
        self._batched_upto = 0
        self.info = ModelInfo(
            name=summary.name or path.stem,
            path=str(path),
            architecture=summary.architecture,
            chat_template=summary.chat_template or "",
            bos_token=summary.bos_token or "",
            eos_token=summary.eos_token or "",
            n_ctx=self.llm.n_ctx(),
            tags_in_vocab=summary.tags_in_vocab,
            fim_tokens=summary.fim_tokens,
        )
        self._add_bos = bool(summary.add_bos_token)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One call at a time: other threads wait their turn; the same thread must not nest.

        A stream holds the model until it is exhausted or closed. Starting another call from the
        thread that still holds an open stream would wait forever, so that is an error instead.
        """
        if self._owner == threading.get_ident():
            raise EngineError(
                "the engine is still busy with an earlier generation from this thread",
                "read the earlier stream to its end or close() it before starting another",
            )
        with self._lock:
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None

    # -- tokens -----------------------------------------------------------------------------------

    def _tokenize(self, text: bytes, add_bos: bool) -> list[int]:
        return self.llm.tokenize(text, add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text.encode("utf-8"), add_bos=False))

    def _prompt_tokens(self, prompt: str) -> list[int]:
        """Tokens of the prompt, re-using the exact ids of the last call when the prompt extends it.

        A continuation (after the decision point, or after closing a think block) is the previous
        prompt plus what was sampled plus a few new characters; tokenizing it afresh could split the
        sampled text differently and miss the KV cache.
        """
        data = prompt.encode("utf-8")
        if self._history_bytes and data.startswith(self._history_bytes):
            rest = data[len(self._history_bytes) :]
            return self._history_tokens + (self._tokenize(rest, add_bos=False) if rest else [])
        add_bos = self._add_bos and not prompt.startswith(self.info.bos_token or "\0")
        return self._tokenize(data, add_bos=add_bos)

    def _is_end(self, token: int) -> bool:
        return llama_compat.is_end_of_generation(self._vocab, token)

    # -- generation -------------------------------------------------------------------------------

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        stats = stats if stats is not None else StreamStats()
        with self._exclusive():
            tokens = self._prompt_tokens(prompt)
            n_ctx = self.info.n_ctx
            if len(tokens) >= n_ctx:
                raise ContextOverflowError(
                    f"the prompt is {len(tokens)} tokens but the context window is {n_ctx}",
                    "shorten the input or raise n_ctx (--n-ctx, config key n_ctx)",
                )
            stats.prompt_tokens = len(tokens)
            # Leave at least two prompt tokens to evaluate: Llama.generate evaluates the uncached
            # rest in one batch, and a one-token batch would give slightly different logits, so
            # the same prompt would not always give the same greedy answer.
            reused = min(self._cached_prefix(tokens), self._batched_upto, max(0, len(tokens) - 2))
            if reused and (len(tokens) - reused) % self.llm.n_batch == 1:
                reused -= 1  # Llama.eval splits by n_batch: never leave a one-token batch
            llama_compat.truncate_cache(self.llm, reused)
            stats.reused_tokens = reused
            self._batched_upto = len(tokens)
            self.llm.set_seed(RANDOM_SEED if params.seed is None else params.seed)
            generated: list[int] = []
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            raw = bytearray()
            started = time.perf_counter()
            first = True
            try:
                for token in self.llm.generate(
                    tokens,
                    temp=params.temperature,
                    top_p=params.top_p,
                    top_k=params.top_k,
                    min_p=params.min_p,
                    repeat_penalty=params.repeat_penalty,
                ):
                    if first:
                        stats.prompt_eval_s = time.perf_counter() - started
                        first = False
                    if cancel is not None and cancel.is_set():
                        stats.finish_reason = "cancelled"
                        break
                    if self._is_end(token):
                        stats.finish_reason = "stop"
                        stats.end_token = token
                        break
                    generated.append(token)
                    stats.token_ids.append(token)
                    stats.generated_tokens += 1
                    piece = self.llm.detokenize([token], special=True)
                    raw += piece
                    text = decoder.decode(piece)
                    if text:
                        yield text
                    if stats.generated_tokens >= params.max_tokens:
                        stats.finish_reason = "length"
                        break
                    if len(tokens) + len(generated) >= n_ctx:
                        stats.finish_reason = "context"
                        break
            except RuntimeError as exc:  # llama_decode failures surface as RuntimeError
                raise EngineError(
                    f"llama.cpp failed while generating: {exc}", "retry; if it persists, lower n_ctx"
                ) from exc
            finally:
                # A stop inside a multi-byte character leaves bytes that are no text: drop them.
                incomplete = decoder.decode(b"", final=True) != ""
                if stats.finish_reason is None:
                    stats.finish_reason = "cancelled"  # the consumer stopped reading
                self._remember(prompt, tokens, bytes(raw), generated, clean=not incomplete)

    def _remember(self, prompt: str, tokens: list[int], raw: bytes, generated: list[int], clean: bool) -> None:
        """Keep prompt + generation as ids and bytes, for the next call's `_prompt_tokens`."""
        if clean:
            self._history_bytes = prompt.encode("utf-8") + raw
            self._history_tokens = tokens + generated
        else:  # the generation ended inside a UTF-8 sequence: text and ids no longer line up
            self._history_bytes, self._history_tokens = b"", []

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many leading prompt tokens are already in the KV cache."""
        cached = llama_compat.cached_tokens(self.llm)
        n = min(len(cached), len(tokens))
        if n == 0:
            return 0
        same = np.asarray(cached[:n]) == np.asarray(tokens[:n])
        return n if same.all() else int(np.argmin(same))

    # -- scoring ----------------------------------------------------------------------------------

    def _log_softmax_at(self, index: int, temperature: float = 1.0) -> np.ndarray:
        """Log-probabilities of the next token at row `index` of the last decoded batch."""
        logits = llama_compat.logits_row(self.llm, index, self._n_vocab) / temperature
        top = logits.max()
        log_probs: np.ndarray = logits - top - np.log(np.exp(logits - top).sum())
        return log_probs

    def continuation_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        with self._exclusive():
            base = self._prompt_tokens(prompt)
            conts = [self._tokenize(c.encode("utf-8"), add_bos=False) for c in continuations]
            longest = max(len(c) for c in conts)
            if len(base) + longest > self.info.n_ctx:
                raise EngineError(
                    "no room left in the context window to score the think decision",
                    "raise n_ctx or shorten the input",
                )
            # Re-evaluate everything after the batched prefix, always >= 2 tokens per batch: the
            # bulk once, then per continuation the last prompt tokens with the continuation.
            keep = max(0, min(self._cached_prefix(base), self._batched_upto, len(base) - 2))
            bulk_end = len(base) - 2
            if (bulk_end - keep) % self.llm.n_batch == 1:
                bulk_end -= 1  # Llama.eval splits by n_batch: never leave a one-token batch
            if bulk_end > keep:
                llama_compat.truncate_cache(self.llm, keep)
                self.llm.eval(base[keep:bulk_end])
                keep = bulk_end
            results = []
            for cont in conts:
                llama_compat.truncate_cache(self.llm, keep)
                region = base[keep:] + cont[:-1]
                llama_compat.decode_batch(self.llm, region)
                first_row = len(base) - keep - 1  # the row whose logits predict cont[0]
                results.append(sum(float(self._log_softmax_at(first_row + i)[t]) for i, t in enumerate(cont)))
            self._batched_upto = len(base)
            return results

    def continuation_top_logprobs(
        self, prompt: str, continuation: str, k: int, temperature: float = 1.0
    ) -> np.ndarray | None:
        """Evaluates the prompt, then the continuation in batches, reading every row's distribution."""
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        with self._exclusive():
            base = self._prompt_tokens(prompt)
            cont = self._tokenize(continuation.encode("utf-8"), add_bos=False)
            if not base:
                raise EngineError(
                    "an empty prompt gives no distribution for the first token (this model adds no BOS)",
                    "give a prompt",
                )
            width = min(k, self._n_vocab)
            rows = np.empty((len(cont), width), dtype=np.float32)
            if not cont:
                return rows
            if len(base) + len(cont) > self.info.n_ctx:
                raise EngineError(
                    f"prompt and continuation ({len(base) + len(cont)} tokens) do not fit the context window",
                    "raise n_ctx or shorten the text",
                )
            keep = max(0, min(self._cached_prefix(base), self._batched_upto, len(base) - 1))
            bulk_end = len(base) - 1
            if (bulk_end - keep) % self.llm.n_batch == 1:
                bulk_end -= 1  # Llama.eval splits by n_batch: never leave a one-token batch
            llama_compat.truncate_cache(self.llm, keep)
            if bulk_end > keep:
                self.llm.eval(base[keep:bulk_end])
            region = base[bulk_end:] + cont[:-1]  # row lead + i predicts cont[i]
            lead = len(base) - 1 - bulk_end
            for start in range(0, len(region), self.llm.n_batch):
                batch = region[start : start + self.llm.n_batch]
                llama_compat.decode_batch(self.llm, batch)
                for i in range(max(0, lead - start), len(batch)):
                    log_probs = self._log_softmax_at(i, temperature)
                    top = np.argpartition(log_probs, -width)[-width:]
                    rows[start + i - lead] = np.sort(log_probs[top])[::-1]
            self._batched_upto = len(base)
            return rows

    def close(self) -> None:
        self.llm.close()
