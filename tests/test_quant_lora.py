"""LoRA through katpilot quant: merged into the base at export, or alone as a GGUF adapter that
llama.cpp loads over the base; both against PEFT's own merge of the same adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("peft", reason="LoRA round trips need the train extra")

from quant_helpers import logits_llama

from quant.errors import QuantError
from quant.export import export_checkpoint
from quant.lora import export_adapter

SEQUENCES = [[1, 504, 3287, 17, 12, 7, 99, 2003, 45, 311, 2, 1, 9, 77], list(range(2000, 2024))]


@pytest.fixture(scope="module")
def adapter(smol_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray[Any, Any]]]:
    """An rsLoRA adapter with non-zero B on every linear layer, and PEFT's merged logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smol_checkpoint, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=targets))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: an untrained adapter would change nothing
                param.normal_(0.0, 0.02)
    path = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(path)
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        logits = [merged(torch.tensor([ids])).logits[0].numpy() for ids in SEQUENCES]
    return path, logits


def _max_diff(a: list[np.ndarray[Any, Any]], b: list[np.ndarray[Any, Any]]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_merged_export_and_adapter_gguf_both_give_peft_merged_logits(
    smol_checkpoint: Path, adapter: tuple[Path, list[np.ndarray[Any, Any]]], tmp_path: Path
) -> None:
    adapter_dir, peft_logits = adapter
    base, merged = tmp_path / "base.gguf", tmp_path / "merged.gguf"
    export_checkpoint(smol_checkpoint, base, "f32")
    report = export_checkpoint(smol_checkpoint, merged, "f32", lora=adapter_dir)
    assert report.merged_lora == adapter_dir
    pairs = export_adapter(adapter_dir, smol_checkpoint, tmp_path / "adapter.gguf", "f32")
    assert pairs == 30 * 7

    base_logits = logits_llama(base, SEQUENCES)
    merged_logits = logits_llama(merged, SEQUENCES)
    over_base = logits_llama(base, SEQUENCES, lora=tmp_path / "adapter.gguf")
    print(
        f"adapter moves logits by {_max_diff(base_logits, peft_logits):.2f}; merged export vs PEFT "
        f"{_max_diff(merged_logits, peft_logits):.4f}; adapter over base vs merged export {_max_diff(over_base, merged_logits):.4f}"
    )
    assert _max_diff(base_logits, peft_logits) > 1.0, "the adapter must matter, or this test proves nothing"
    assert _max_diff(merged_logits, peft_logits) < 0.1
    assert _max_diff(over_base, merged_logits) < 0.1


def test_adapters_llama_cpp_cannot_run_are_refused_by_name(
    smol_checkpoint: Path, adapter: tuple[Path, list[np.ndarray[Any, Any]]], tmp_path: Path
) -> None:
    adapter_dir, _ = adapter
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    with pytest.raises(QuantError, match="DoRA"):
        export_adapter(dora, smol_checkpoint, tmp_path / "x.gguf")
    (dora / "adapter_config.json").write_text(json.dumps(config | {"r": "x"}))
    with pytest.raises(QuantError, match="r and lora_alpha must be numbers"):
        export_adapter(dora, smol_checkpoint, tmp_path / "x.gguf")
    with pytest.raises(QuantError, match="f32, f16 or bf16"):
        export_adapter(adapter_dir, smol_checkpoint, tmp_path / "x.gguf", "q4_k_m")
    other = tmp_path / "tiny"
    from quant_helpers import tiny_checkpoint

    tiny_checkpoint("llama", smol_checkpoint, other)
    with pytest.raises(QuantError, match="the base tensor is"):
        export_checkpoint(other, tmp_path / "y.gguf", "f32", lora=adapter_dir)
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial*"))
