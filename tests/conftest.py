"""Shared fixtures: the real embedded model, one llama.cpp engine per test run, a private home."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from katpilot.models import embedded_model_path


@pytest.fixture(autouse=True)
def katpilot_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config/data/cache directories: the real user's are never touched."""
    home = tmp_path_factory.mktemp("home")
    # Every setting, and any added later; OPENAI_API_KEY is the remote engine's fallback key.
    for name in [n for n in os.environ if n.startswith("KATPILOT_") or n == "OPENAI_API_KEY"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KATPILOT_HOME", str(home))
    # The model stores katpilot searches (stores.store_roots) are found from HOME and these variables:
    # a developer's Ollama or Hugging Face models must not show up in a test.
    for name in ("OLLAMA_MODELS", "LLAMA_CACHE", "HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(scope="session")
def model_path() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="session")
def engine(model_path: Path) -> Iterator[LocalEngine]:  # noqa: F821
    from katpilot.engine.local import LocalEngine

    eng = LocalEngine(model_path, n_ctx=2048, n_threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def smol_checkpoint(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model as a Hugging Face checkpoint (through transformers; needs the train extra)."""
    pytest.importorskip("torch", reason="needs the train extra")
    from quant_helpers import embedded_as_checkpoint

    return embedded_as_checkpoint(model_path, tmp_path_factory.mktemp("smol-hf"))


@pytest.fixture(scope="session")
def smol_greedy(smol_checkpoint: Path) -> tuple[list[list[int]], list[list[int]]]:
    """The export tests' 20 prompts as token ids, and transformers' greedy 32-token continuations."""
    from quant_helpers import PROMPTS, greedy_hf
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(smol_checkpoint / "tokenizer.json"))
    prompts = [tokenizer.encode(p).ids for p in PROMPTS]
    return prompts, greedy_hf(smol_checkpoint, prompts, 32)
