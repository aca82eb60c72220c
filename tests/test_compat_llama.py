"""The llama-cpp-python internals behind `katpilot/engine/llama_compat.py`, checked on a real `Llama`
loaded from the embedded model: an upgrade that removes or renames one fails here, naming it,
rather than deep inside a generation.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from katpilot.engine import llama_compat

llama_cpp = pytest.importorskip("llama_cpp")
VERSION = version("llama-cpp-python")


@pytest.fixture(scope="module")
def llm(model_path: Path) -> Iterator[Any]:
    model = llama_cpp.Llama(model_path=str(model_path), n_ctx=256, n_threads=2, n_threads_batch=2, verbose=False)
    yield model
    model.close()


def _require(root: object, root_name: str, dotted: str, used_by: str) -> Any:
    """getattr along `dotted`, or a failure naming the internal and the compat function using it."""
    obj = root
    for i, part in enumerate(dotted.split(".")):
        if not hasattr(obj, part):
            missing = ".".join([root_name, *dotted.split(".")[: i + 1]])
            pytest.fail(
                f"llama-cpp-python {VERSION} has no `{missing}`, which katpilot/engine/llama_compat.py"
                f" `{used_by}` relies on: adapt that function (and the pin in pyproject.toml)",
                pytrace=False,
            )
        obj = getattr(obj, part)
    return obj


# (path from a Llama instance or the llama_cpp module, the compat function that uses it)
INTERNALS = [
    ("Llama", "_model.vocab", "vocab"),
    ("llama_cpp", "llama_vocab_is_eog", "is_end_of_generation"),
    ("Llama", "_input_ids", "cached_tokens"),
    ("Llama", "n_tokens", "truncate_cache / decode_batch"),
    ("Llama", "input_ids", "decode_batch"),
    ("Llama", "_ctx.kv_cache_seq_rm", "decode_batch"),
    ("Llama", "_ctx.decode", "decode_batch"),
    ("Llama", "_batch.set_batch", "decode_batch"),
    ("Llama", "ctx", "logits_row"),
    ("llama_cpp", "llama_get_logits_ith", "logits_row"),
]


@pytest.mark.parametrize(("root", "dotted", "used_by"), INTERNALS, ids=[f"{r}.{d}" for r, d, _ in INTERNALS])
def test_internal_exists(llm: Any, root: str, dotted: str, used_by: str) -> None:
    _require(llm if root == "Llama" else llama_cpp, root, dotted, used_by)


def test_internal_signatures(llm: Any) -> None:
    set_batch = _require(llm, "Llama", "_batch.set_batch", "decode_batch")
    params = set(inspect.signature(set_batch).parameters)
    assert {"batch", "n_past", "logits_all"} <= params, (
        f"llama-cpp-python {VERSION}: `Llama._batch.set_batch` takes {sorted(params)}, not (batch, n_past,"
        " logits_all) as katpilot/engine/llama_compat.py `decode_batch` calls it"
    )
    assert isinstance(llm.n_tokens, int) and not isinstance(
        inspect.getattr_static(type(llm), "n_tokens", None), property
    ), (
        f"llama-cpp-python {VERSION}: `Llama.n_tokens` is no longer a plain attribute; llama_compat"
        " `truncate_cache` writes it"
    )
    assert (
        isinstance(llm.input_ids, np.ndarray)
        and llm.input_ids.shape == (llm.n_ctx(),)
        and llm.input_ids.flags.writeable
    ), (
        f"llama-cpp-python {VERSION}: `Llama.input_ids` is no longer a writable array of n_ctx ids; llama_compat"
        " `decode_batch` writes it"
    )


def test_compat_functions_work_together(llm: Any) -> None:
    """The cache bookkeeping the engine builds on: what `generate`/`eval` read is what we wrote."""
    tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog", add_bos=False, special=True)
    assert len(tokens) > 4
    llama_compat.truncate_cache(llm, 0)
    llm.eval(tokens)
    assert list(llama_compat.cached_tokens(llm)) == tokens, (
        f"llama-cpp-python {VERSION}: `Llama._input_ids` no longer lists the evaluated tokens (llama_compat `cached_tokens`)"
    )

    llama_compat.truncate_cache(llm, 2)
    assert list(llama_compat.cached_tokens(llm)) == tokens[:2], (
        f"llama-cpp-python {VERSION}: writing `Llama.n_tokens` no longer shortens `_input_ids` (llama_compat `truncate_cache`)"
    )
    llm.eval(tokens[2:])
    last_by_eval = llama_compat.logits_row(llm, -1, llm.n_vocab())
    llama_compat.truncate_cache(llm, 2)
    llama_compat.decode_batch(llm, tokens[2:])
    assert list(llama_compat.cached_tokens(llm)) == tokens, (
        f"llama-cpp-python {VERSION}: after llama_compat `decode_batch` the cache does not list the decoded tokens"
    )
    rows = [llama_compat.logits_row(llm, i, llm.n_vocab()) for i in range(len(tokens) - 2)]
    assert all(r.shape == (llm.n_vocab(),) and np.isfinite(r).all() for r in rows), (
        f"llama-cpp-python {VERSION}: `llama_get_logits_ith` gave no logits for every row of a `decode_batch`"
    )
    # The same tokens after the same two, in one batch each time: the same next-token logits.
    assert int(np.argmax(rows[-1])) == int(np.argmax(last_by_eval))
    np.testing.assert_allclose(rows[-1], last_by_eval, atol=1e-3)
    llama_compat.truncate_cache(llm, 0)


def test_end_of_generation(llm: Any) -> None:
    vocab = llama_compat.vocab(llm)
    assert llama_compat.is_end_of_generation(vocab, llm.token_eos()), (
        f"llama-cpp-python {VERSION}: `llama_vocab_is_eog` no longer recognises EOS (llama_compat `is_end_of_generation`)"
    )
    word = llm.tokenize(b"hello", add_bos=False, special=False)[0]
    assert not llama_compat.is_end_of_generation(vocab, word)
