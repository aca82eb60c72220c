"""katpilot quant export on real checkpoints: the embedded model through transformers and back into
llama.cpp, tiny qwen2 / qwen3 / llama models from configs, tokenizers token for token."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="export round trips need the train extra (torch, transformers)")

from quant_helpers import (
    LLAMA3_PRE,
    MIXED_TEXT,
    QWEN2_PRE,
    SMOLLM_PRE,
    logits_hf,
    logits_llama,
    set_pre_tokenizer,
    tiny_checkpoint,
)

from quant.export import export_checkpoint
from quant.vocab import pre_tokenizer_name


def _greedy_llama(path: Path, prompts: list[list[int]], n: int) -> list[list[int]]:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, verbose=False)
    try:
        out = []
        for ids in prompts:
            tokens: list[int] = []
            for token in llm.generate(ids, temp=0.0, reset=True):
                tokens.append(token)
                if token == llm.token_eos() or len(tokens) == n:
                    break
            out.append(tokens)
        return out
    finally:
        llm.close()


def _tokenize_both(checkpoint: Path, gguf_path: Path, text: str) -> tuple[list[int], list[int]]:
    import llama_cpp
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(checkpoint / "tokenizer.json")).encode(text).ids
    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    try:
        return hf, llm.tokenize(text.encode(), add_bos=False, special=True)
    finally:
        llm.close()


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_the_embedded_model_round_trips_through_transformers_and_back(
    smol_checkpoint: Path, smol_greedy: tuple[list[list[int]], list[list[int]]], tmp_path: Path, kind: str
) -> None:
    out = tmp_path / f"smol-{kind}.gguf"
    report = export_checkpoint(smol_checkpoint, out, kind)
    assert report.pre_tokenizer == "smollm" and report.tensors == 272 and "<|im_end|>" in report.control_tokens
    hf, ours = _tokenize_both(smol_checkpoint, out, MIXED_TEXT)
    assert hf == ours, "llama.cpp must tokenize exactly as the Hugging Face tokenizer"
    prompts, expected = smol_greedy
    got = _greedy_llama(out, prompts, 32)
    same = sum(a == b for a, b in zip(expected, got, strict=True))
    sequences = [p + e for p, e in zip(prompts, expected, strict=True)]
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(logits_hf(smol_checkpoint, sequences[:4]), logits_llama(out, sequences[:4]), strict=True)
    )
    print(f"{kind}: {same}/20 greedy continuations equal; max |logit difference| on 4 sequences {diff:.4f}")
    assert same == 20
    assert diff < (0.1 if kind == "f32" else 0.5)


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [
        ("qwen2", {}),
        ("qwen3", {}),
        (
            "llama",
            {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                }
            },
        ),
        ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "tie_word_embeddings": False}),
    ],
    ids=["qwen2", "qwen3", "llama-rope-llama3", "llama-rope-linear-untied"],
)
def test_tiny_models_from_configs_match_transformers_logits(
    smol_checkpoint: Path, tmp_path: Path, arch: str, overrides: dict[str, Any]
) -> None:
    ckpt = tiny_checkpoint(arch, smol_checkpoint, tmp_path / arch, **overrides)
    out = tmp_path / f"{arch}.gguf"
    export_checkpoint(ckpt, out, "f32")
    sequences = [list(range(1000, 1200)), [1, 504, 3287, 17, 12, 7, 99, 2003, 45, 45, 45]]
    hf, ours = logits_hf(ckpt, sequences), logits_llama(out, sequences)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(hf, ours, strict=True))
    scale = max(float(np.abs(a).max()) for a in hf)
    print(f"{arch} {overrides}: max |logit difference| {diff:.2e} (logits up to {scale:.1f})")
    assert diff < 0.01, "llama.cpp's logits must match transformers' within 0.01"
    assert all((a.argmax(-1) == b.argmax(-1)).mean() > 0.99 for a, b in zip(hf, ours, strict=True))


@pytest.mark.parametrize(("pre", "name"), [(SMOLLM_PRE, "smollm"), (QWEN2_PRE, "qwen2"), (LLAMA3_PRE, "llama-bpe")])
def test_each_known_pre_tokenizer_tokenizes_as_hugging_face_does(
    smol_checkpoint: Path, tmp_path: Path, pre: dict[str, Any], name: str
) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(smol_checkpoint, ckpt, ignore=shutil.ignore_patterns("*.safetensors"))
    set_pre_tokenizer(ckpt, pre)
    tokenizer = __import__("json").loads((ckpt / "tokenizer.json").read_text())
    assert pre_tokenizer_name(tokenizer, ckpt) == name
    out = _vocab_only_gguf(ckpt, tmp_path / "vocab.gguf")
    hf, ours = _tokenize_both(ckpt, out, MIXED_TEXT)
    assert hf == ours


def _vocab_only_gguf(checkpoint: Path, out: Path) -> Path:
    """A GGUF with the tokenizer and no tensors: llama.cpp's vocab_only load reads just that."""
    import gguf

    from quant.vocab import add_tokenizer

    writer = gguf.GGUFWriter(out, "llama")
    add_tokenizer(writer, checkpoint, 49152)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return out
