"""katpilot quant export on real checkpoints: the embedded model through transformers and back into
llama.cpp, tiny qwen2 / qwen3 / llama models from configs, tokenizers token for token."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
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
    add_mtp_heads,
    logits_hf,
    logits_llama,
    set_pre_tokenizer,
    tiny_checkpoint,
)

from quant.errors import QuantError
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


def _broken(tmp_path: Path, smol_checkpoint: Path, name: str) -> Path:
    """A tiny llama checkpoint, broken one way."""
    ckpt = tiny_checkpoint("llama", smol_checkpoint, tmp_path / name)
    config = json.loads((ckpt / "config.json").read_text())
    if name == "missing-tensor":
        from safetensors.torch import load_file, save_file

        tensors = load_file(ckpt / "model.safetensors")
        del tensors["model.layers.1.mlp.up_proj.weight"]
        save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})
    elif name == "wrong-shape":
        config["intermediate_size"] = 96
    elif name == "unknown-architecture":
        config["model_type"] = "gpt_neox"
    elif name == "bad-number":
        config["hidden_size"] = "abc"
    elif name == "out-of-range":
        config["max_position_embeddings"] = -5
    elif name == "bad-shard-index":
        (ckpt / "model.safetensors").unlink()
        (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": [1]}))
    elif name == "tied-as-string":
        config["tie_word_embeddings"] = "false"
    elif name == "heads-declared-not-held":
        config["num_nextn_predict_layers"] = 1
    elif name == "unknown-pre-tokenizer":
        set_pre_tokenizer(ckpt, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})
    (ckpt / "config.json").write_text(json.dumps(config))
    return ckpt


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("missing-tensor", "has no tensor model.layers.1.mlp.up_proj.weight"),
        ("wrong-shape", "tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], the config says [96, 64]"),
        ("unknown-architecture", "architecture 'gpt_neox'"),
        ("bad-number", "hidden_size is 'abc', not a number"),
        ("out-of-range", "max_position_embeddings is -5, out of range"),
        ("bad-shard-index", "weight_map is not an object of tensor names to file names"),
        ("tied-as-string", "tie_word_embeddings is 'false', not true or false"),
        ("unknown-pre-tokenizer", "unknown pre-tokenizer (Metaspace)"),
        ("heads-declared-not-held", "declares 1 MTP layer(s) (num_nextn_predict_layers) the checkpoint does not hold"),
    ],
)
def test_a_broken_checkpoint_is_one_line_exit_2_and_no_file(
    smol_checkpoint: Path, tmp_path: Path, name: str, says: str
) -> None:
    ckpt = _broken(tmp_path, smol_checkpoint, name)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "katpilot",
            "quant",
            "export",
            str(ckpt),
            "--out",
            str(out / "m.gguf"),
            "--type",
            "q4_k_m",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr
    assert list(out.iterdir()) == []


def test_export_never_replaces_its_own_checkpoint_or_a_file_that_is_not_a_gguf(
    smol_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = tiny_checkpoint("qwen3", smol_checkpoint, tmp_path / "ckpt")
    add_mtp_heads(ckpt)
    weights = (ckpt / "model.safetensors").read_bytes()
    for target in (ckpt / "model.safetensors", ckpt / "config.json"):
        with pytest.raises(QuantError, match="exists and is not a GGUF file"):
            export_checkpoint(ckpt, target, "f16")
    assert (ckpt / "model.safetensors").read_bytes() == weights
    (tmp_path / "m.mtp.gguf").write_text("not the heads\n")  # the MTP companion's name, taken by another file
    with pytest.raises(QuantError, match=r"m\.mtp\.gguf exists and is not a GGUF file"):
        export_checkpoint(ckpt, tmp_path / "m.gguf", "f16")
    assert (tmp_path / "m.mtp.gguf").read_text() == "not the heads\n" and not (tmp_path / "m.gguf").exists()
    report = export_checkpoint(ckpt, ckpt / "model.gguf", "f16")  # a new file inside the checkpoint is fine
    assert report.output.exists() and (ckpt / "model.safetensors").read_bytes() == weights


def test_a_full_disk_leaves_no_file_behind(
    smol_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import quant.gguf_out

    ckpt = tiny_checkpoint("qwen3", smol_checkpoint, tmp_path / "ckpt")
    add_mtp_heads(ckpt)
    real, calls = quant.gguf_out.Encoder.__call__, [0]

    def fill_up(self: Any, rows: Any, qtype: Any) -> Any:  # the disk fills up part-way through the main file
        calls[0] += 1
        if calls[0] > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, rows, qtype)

    monkeypatch.setattr(quant.gguf_out.Encoder, "__call__", fill_up)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QuantError, match="the disk is full: cannot write"):
        export_checkpoint(ckpt, out / "m.gguf", "q8_0")
    assert list(out.iterdir()) == []


def test_export_and_check_from_the_command_line(smol_checkpoint: Path, tmp_path: Path) -> None:
    smol = smol_checkpoint
    ckpt = tiny_checkpoint("qwen2", smol_checkpoint, tmp_path / "ckpt")
    out = tmp_path / "m.gguf"
    run = [sys.executable, "-m", "katpilot", "quant"]
    repo = tmp_path / "repo"  # the team's repository: what the importance matrix is measured on
    repo.mkdir()
    (repo / "shapes.py").write_text("def area(w: float, h: float) -> float:\n    return w * h\n" * 40)
    command = [*run, "export", str(ckpt), "--out", str(out), "--type", "q4_k_m", "--calibration", str(repo)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (qwen2, q4_k_m, ") and "pre-tokenizer smollm" in done.stdout
    assert "importance matrix for 15 tensors" in done.stdout
    assert "fell back" in done.stderr  # 64 columns: K-quants need 256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.gguf", "repo"]  # the f32 intermediate is gone
    checked = subprocess.run(
        [*run, "check", str(out), "--against", str(ckpt)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok  tokenizer: llama.cpp and Hugging Face agree" in checked.stdout
    # A file that is not what the checkpoint holds: another random model of the same shape.
    other = tiny_checkpoint("qwen2", smol_checkpoint, tmp_path / "other", seed=5)
    export_checkpoint(other, tmp_path / "other.gguf", "f16")
    wrong = subprocess.run(
        [*run, "check", str(tmp_path / "other.gguf"), "--against", str(ckpt)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 2 and "BAD blk.0.attn_q.weight (F16): relative error" in wrong.stdout
    # Another model altogether: every difference is a BAD line, never a traceback.
    command = [*run, "check", str(out), "--against", str(smol)]
    unrelated = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert unrelated.returncode == 2 and "BAD architecture" in unrelated.stdout, unrelated.stdout + unrelated.stderr
    (ckpt / "tokenizer.json").write_text("{}")  # the checkpoint's tokenizer broken: one line, not the package's error
    broken = subprocess.run(
        [*run, "check", str(out), "--against", str(ckpt)], capture_output=True, text=True, timeout=120
    )
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1, broken.stdout + broken.stderr
    assert "cannot read" in broken.stderr and "tokenizer.json" in broken.stderr


def test_our_fast_metadata_packing_writes_gguf_writers_exact_bytes(smol_checkpoint: Path, tmp_path: Path) -> None:
    import gguf

    from quant.gguf_out import Writer
    from quant.vocab import add_tokenizer

    files = []
    for kind in (gguf.GGUFWriter, Writer):
        path = tmp_path / f"{kind.__name__}.gguf"
        writer = kind(path, "llama")
        writer.add_block_count(30)
        add_tokenizer(writer, smol_checkpoint, 49152)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        files.append(path.read_bytes())
    assert files[0] == files[1]


def test_llama3_post_processor_adds_bos_in_llama_cpp_as_in_hugging_face(smol_checkpoint: Path, tmp_path: Path) -> None:
    """Llama 3 wraps its BOS template in a Sequence post-processor; the flag must still say add BOS."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(smol_checkpoint, ckpt, ignore=shutil.ignore_patterns("*.safetensors"))
    data = json.loads((ckpt / "tokenizer.json").read_text())
    bos = {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}
    template = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}},
    }
    data["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
            template,
        ],
    }
    (ckpt / "tokenizer.json").write_text(json.dumps(data))
    out = _vocab_only_gguf(ckpt, tmp_path / "vocab.gguf")
    import llama_cpp
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode("hi there").ids
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    try:
        assert hf[0] == 1 and llm.tokenize(b"hi there", add_bos=True, special=True) == hf
    finally:
        llm.close()


def test_q8_0_keeps_norms_f32_when_rows_do_not_fill_its_blocks(smol_checkpoint: Path, tmp_path: Path) -> None:
    import gguf

    ckpt = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "ckpt", hidden_size=80)  # 80: not a multiple of 32
    out = tmp_path / "m.gguf"
    report = export_checkpoint(ckpt, out, "q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["output_norm.weight"] == "F32" and types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == "F16" and "blk.0.attn_q.weight" in report.fallbacks
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # its rows are 128 wide
    sequences = [[1, 504, 3287, 17, 12, 7, 99]]
    assert float(np.abs(logits_hf(ckpt, sequences)[0] - logits_llama(out, sequences)[0]).max()) < 0.1


def test_the_model_is_named_after_its_directory_or_file_or_as_asked(smol_checkpoint: Path, tmp_path: Path) -> None:
    """general.name is what serving shows and eval plots title: a trainer's `final/` names nothing."""
    from katpilot.gguf_file import read_gguf

    named = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "tiny-coder")
    final = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "run" / "final")
    export_checkpoint(named, tmp_path / "a.gguf", "f16")
    export_checkpoint(final, tmp_path / "my-sft.gguf", "f16")
    export_checkpoint(final, tmp_path / "b.gguf", "f16", name="tiny-autothink")
    assert read_gguf(tmp_path / "a.gguf").name == "tiny-coder"
    assert read_gguf(tmp_path / "my-sft.gguf").name == "my-sft"
    assert read_gguf(tmp_path / "b.gguf").name == "tiny-autothink"
