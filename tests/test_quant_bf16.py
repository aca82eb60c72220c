"""bf16 checkpoints stay in 16 bits on their way to f16 or bf16: exact, and equal to the float32 route."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quant.halfbits import bf16_to_f16_bits


def _via_float32(bits: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float16).view(np.uint16)


def test_every_bf16_pattern_converts_as_numpy_casts_it() -> None:
    """All 65,536 patterns: normals, f16 subnormals, overflow, signed zeros, inf and nan."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    assert np.array_equal(bf16_to_f16_bits(bits), _via_float32(bits))
    out = np.empty_like(bits)
    assert bf16_to_f16_bits(bits, out=out) is out and np.array_equal(out, _via_float32(bits))


def test_a_bf16_checkpoint_exports_to_f16_and_bf16_as_the_float_route_does(
    smol_checkpoint: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    import gguf
    from quant_helpers import tiny_checkpoint

    from quant.architectures import to_llama_rotary
    from quant.checkpoint import open_checkpoint
    from quant.export import export_checkpoint

    ckpt = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "ckpt", bf16=True)
    source = open_checkpoint(ckpt)
    expected_f32 = {name: ref.read() for name, ref in source.tensors.items()}
    for type_name, qtype in (("f16", gguf.GGMLQuantizationType.F16), ("bf16", gguf.GGMLQuantizationType.BF16)):
        out = tmp_path / f"tiny-{type_name}.gguf"
        export_checkpoint(ckpt, out, type_name)
        written = {t.name: t for t in gguf.GGUFReader(out).tensors}
        q = written["blk.0.attn_q.weight"]
        assert q.tensor_type == qtype
        rows = expected_f32["model.layers.0.self_attn.q_proj.weight"]
        head_dim = rows.shape[1] // 4  # the tiny model: hidden 64, 4 heads
        want = to_llama_rotary(rows, head_dim)
        if type_name == "f16":
            want_bits = want.astype(np.float16).view(np.uint16)
        else:
            want_bits = (want.view(np.uint32) >> 16).astype(np.uint16)  # exact: these floats came from bf16
        assert np.array_equal(np.asarray(q.data).view(np.uint16).reshape(want_bits.shape), want_bits)
        down = written["blk.1.ffn_down.weight"]
        assert down.tensor_type == qtype
