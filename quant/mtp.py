"""Reading an MTP companion GGUF back: the heads as the checkpoint held them, bit for bit.

`katpilot quant export` writes a checkpoint's multi-token-prediction blocks to `NAME.mtp.gguf` in
llama.cpp's nextn layout and the checkpoint's own precision. This module inverts it (GGUF names
back to Hugging Face names, llama's q/k rows back to the HF rotary layout), so a trainer can resume
from a served model's heads, and the tests can prove the export loses nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

from quant.architectures import Hyper, expected_shapes, from_llama_rotary, mtp_shapes, plan_for
from quant.errors import QuantError

_ARCHES = ("llama", "qwen2", "qwen3")
_OPTIONAL = ("shared_head.norm.weight", "shared_head.head.weight", "embed_tokens.weight")


def _hyper(reader: gguf.GGUFReader, path: Path) -> Hyper:
    def value(key: str) -> Any:
        field = reader.get_field(key)
        if field is None:
            raise QuantError(f"{path} has no {key}", "is it an MTP companion written by katpilot quant export?")
        return field.contents()

    arch = str(value(gguf.Keys.General.ARCHITECTURE))
    if arch not in _ARCHES:
        raise QuantError(f"{path} is a {arch} file", "give an MTP companion of a llama, qwen2 or qwen3 export")
    k = gguf.Keys.LLM
    depth = int(value(k.NEXTN_PREDICT_LAYERS.format(arch=arch)))
    hidden, heads = (
        int(value(k.EMBEDDING_LENGTH.format(arch=arch))),
        int(value(gguf.Keys.Attention.HEAD_COUNT.format(arch=arch))),
    )
    key_length = reader.get_field(gguf.Keys.Attention.KEY_LENGTH.format(arch=arch))
    return Hyper(
        arch=arch,
        blocks=int(value(k.BLOCK_COUNT.format(arch=arch))) - depth,
        mtp_blocks=depth,
        hidden=hidden,
        ff=int(value(k.FEED_FORWARD_LENGTH.format(arch=arch))),
        heads=heads,
        kv_heads=int(value(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch))),
        head_dim=int(key_length.contents()) if key_length is not None else hidden // heads,
        context=0,
        rms_eps=0.0,
        vocab=0,
        rope_theta=0.0,
        rope_scaling={},
        tied=True,
    )


def load_mtp_heads(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """The companion's tensors under their Hugging Face names, as float32 equal to the checkpoint's."""
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise QuantError(f"cannot read {path}: {exc}", "export the checkpoint again") from None
    hp = _hyper(reader, path)
    names = gguf.get_tensor_name_map(hp.gguf_arch, hp.blocks + hp.mtp_blocks)
    sources = {}
    for block in range(hp.blocks, hp.blocks + hp.mtp_blocks):
        shapes = expected_shapes(hp, block) | mtp_shapes(hp, block)
        shapes |= {f"model.layers.{block}.{name}": () for name in _OPTIONAL}
        for source in shapes:
            plan = plan_for(source, shapes[source], hp, names)
            sources[plan.gguf_name] = plan
    heads = {}
    for tensor in reader.tensors:
        found = sources.get(tensor.name)
        if found is None:
            raise QuantError(f"{path} holds {tensor.name}, which is not an MTP tensor", "export the checkpoint again")
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        values = values.reshape([int(n) for n in reversed(tensor.shape)])
        heads[found.source] = from_llama_rotary(values, hp.head_dim) if found.permute_heads else values
    return heads
