"""llama-cpp-python internals the local engine relies on, each behind one small function.

Pins in pyproject.toml that exist because of this module: `"llama-cpp-python>=0.3.36,<0.4"` in
`dependencies` and `"llama-cpp-python[server]>=0.3.36,<0.4"` in the `dev` extra. Private
attributes (`_model`, `_input_ids`, `_ctx`, `_batch`) and the low-level ctypes bindings
(`llama_vocab_is_eog`, `llama_get_logits_ith`) may change in any release, minor ones included: check
`tests/test_compat_llama.py` before moving a bound. It fails naming the internal that went away.

Why internals at all: `Llama`'s public API either re-evaluates the whole prompt or evaluates it
with `logits_all` (slow on every token). The engine needs to keep the KV cache across calls,
choose how much of it to keep (`truncate_cache`), and read the next-token logits of every row of
one batch at the decision point (`decode_batch`, `logits_row`), see `engine/local.py`.

Behaviour of public methods that the engine also relies on (not wrappable, tested end to end by
`tests/test_engine.py`): `Llama.generate` reuses the longest common prefix of its tokens and
`_input_ids` (that is, the first `n_tokens` ids) and evaluates the rest in one call to `eval`;
`Llama.eval` drops the KV cache after `n_tokens` and splits its tokens into batches of `n_batch`.

`llama_cpp` is imported inside the functions that need its bindings: importing this module must
not load the native library (the engine loads it only after `read_gguf` accepted the file).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from llama_cpp import Llama


def vocab(llm: Llama) -> Any:
    """The model's `llama_vocab *`, for `is_end_of_generation`.

    Internal: `Llama._model.vocab` (the `LlamaModel` wrapper's pointer). `Llama` offers no public
    accessor; the pointer lives as long as `llm`.
    """
    return llm._model.vocab


def is_end_of_generation(vocab_ptr: Any, token: int) -> bool:
    """Whether `token` ends a generation: EOS, EOT, `<|im_end|>` and every other end-of-generation token.

    Internal: the low-level binding `llama_cpp.llama_vocab_is_eog`. `Llama.token_eos()` names only
    one of them, and chat models stop on another (`<|im_end|>`, `<|eot_id|>`).
    """
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(vocab_ptr, token))


def cached_tokens(llm: Llama) -> np.ndarray:
    """The token ids whose keys and values are in the KV cache, oldest first.

    Internal: `Llama._input_ids` (`input_ids[:n_tokens]`). The engine compares them with a new
    prompt to know how much of the cache that prompt can reuse.
    """
    return llm._input_ids


def truncate_cache(llm: Llama, n_keep: int) -> None:
    """Keep only the first `n_keep` cached tokens; the next `generate` or `eval` re-evaluates the rest.

    Internal: writes `Llama.n_tokens`, which `generate` and `eval` read as the cache length (both
    remove the KV entries after it themselves). Lowering it is how the engine makes sure that
    what follows is evaluated as one batch (llama.cpp's logits differ slightly between a one-token
    decode and a batched one).
    """
    llm.n_tokens = n_keep


def decode_batch(llm: Llama, tokens: Sequence[int]) -> None:
    """Evaluate `tokens` after the cached ones as ONE batch, keeping the logits of every row.

    What `Llama.eval` does for one batch, but with logits for each row (read with `logits_row`)
    and without `logits_all`, which the model would need from its construction and which slows
    every token. `tokens` must fit in one batch (`len(tokens) <= llm.n_batch`).
    Internals: `Llama._ctx.kv_cache_seq_rm` (drop stale cache entries), `Llama._batch.set_batch`
    (fill the batch with `logits_all=True`), `Llama._ctx.decode`, then `Llama.input_ids` and
    `Llama.n_tokens` written so that `cached_tokens` and `generate` see the new cache.
    """
    n_past = llm.n_tokens
    llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
    llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=True)
    llm._ctx.decode(llm._batch)
    llm.input_ids[n_past : n_past + len(tokens)] = tokens
    llm.n_tokens = n_past + len(tokens)


def logits_row(llm: Llama, row: int, n_vocab: int) -> np.ndarray:
    """A copy (float64) of the next-token logits at row `row` of the last `decode_batch`.

    Internal: the low-level binding `llama_cpp.llama_get_logits_ith` on `Llama.ctx`; `Llama.scores`
    holds logits only with `logits_all`. The pointer is valid only until the next decode, hence
    the copy.
    """
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, row)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)


@contextmanager
def llama_log_lines(on_line: Callable[[str], None]) -> Iterator[None]:
    """Hand every line llama.cpp logs to `on_line` while inside (nothing reaches the terminal).

    Internal: llama-cpp-python routes llama.cpp's log through its callback, which prints to
    `sys.stderr` only when the "llama-cpp-python" logger's level allows it (`Llama(verbose=False)`
    sets it to ERROR for the whole process). Inside, the level admits everything and `sys.stderr`
    is a line collector; both are restored afterwards. The quantizer's per-tensor report
    (quant/quantize.py, tested by tests/test_quant.py) is read this way.
    """
    logger = logging.getLogger("llama-cpp-python")
    level, stderr = logger.level, sys.stderr
    sink = _LineSink(on_line)
    logger.setLevel(logging.DEBUG)
    sys.stderr = sink
    try:
        yield
    finally:
        sys.stderr = stderr
        logger.setLevel(level)
        sink.flush_rest()


class _LineSink(io.TextIOBase):
    """A text stream that calls back once per complete line."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._rest = ""

    def write(self, text: str) -> int:
        lines = (self._rest + text).split("\n")
        self._rest = lines.pop()
        for line in lines:
            self._on_line(line)
        return len(text)

    def flush_rest(self) -> None:
        if self._rest:
            self._on_line(self._rest)
            self._rest = ""
