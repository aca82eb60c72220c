"""What llama.cpp expects of each architecture we export: hyperparameter keys, tensor names and shapes.

Supported: `llama` (SmolLM2, Llama 2/3), `qwen2`, `qwen3`. Tensor names come from the gguf package's
own map (`gguf.get_tensor_name_map`); what is ours is the check that a checkpoint holds exactly the
tensors llama.cpp will ask for, with the shapes the config implies, so a broken checkpoint is one
line here instead of a load failure later. The `llama` q/k rows are permuted to llama.cpp's rotary
layout (HF stores the two rotary halves of each head one after the other; llama.cpp interleaves
them); `qwen2`/`qwen3` use the HF layout as is.

MTP heads (DeepSeek-V3's checkpoint layout, which `katpilot train` writes): `num_nextn_predict_layers`
= D in config.json, and D extra decoder blocks `model.layers.{L+k}` holding, besides a normal block's
tensors, `eh_proj` (2d -> d), `enorm`, `hnorm` and optionally `shared_head.norm`, `shared_head.head`,
`embed_tokens`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

from quant.checkpoint import Checkpoint
from quant.errors import QuantError

_ARCHES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3}
_NEXTN = {
    "eh_proj": "nextn.eh_proj",
    "enorm": "nextn.enorm",
    "hnorm": "nextn.hnorm",
    "shared_head.norm": "nextn.shared_head_norm",
    "shared_head.head": "nextn.shared_head_head",
    "embed_tokens": "nextn.embed_tokens",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass(frozen=True)
class Hyper:
    """The hyperparameters llama.cpp reads, from config.json (transformers 4 and 5 spellings)."""

    arch: str
    blocks: int
    mtp_blocks: int
    hidden: int
    ff: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    rms_eps: float
    vocab: int
    rope_theta: float
    rope_scaling: dict[str, Any]
    tied: bool

    @property
    def gguf_arch(self) -> gguf.MODEL_ARCH:
        return _ARCHES[self.arch]

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]


def read_hyper(ckpt: Checkpoint) -> Hyper:
    """The checkpoint's hyperparameters; an unsupported architecture or missing key is one line."""
    arch = ckpt.architecture
    if arch not in _ARCHES:
        raise QuantError(
            f"architecture {arch!r} of {ckpt.path} is not supported by katpilot quant export",
            f"export one of {', '.join(_ARCHES)}",
        )
    cfg = ckpt.config

    where = ckpt.path / "config.json"

    def number(kind: type[int] | type[float], *keys: str, default: float | None = None, least: int = 1) -> Any:
        value = ckpt.get(*keys, default=default)
        if value is None:
            raise QuantError(f"{where} has no {keys[0]}", "is it a complete checkpoint config?")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise QuantError(f"{where}: {keys[0]} is {value!r}, not a number", "fix config.json")
        # GGUF stores these as 32-bit unsigned integers and positive floats
        if not (least <= value < 2**32 if kind is int else 0 < value < float("inf")):
            raise QuantError(f"{where}: {keys[0]} is {value!r}, out of range", "fix config.json")
        return kind(value)

    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict) or not isinstance(scaling, dict):
        raise QuantError(f"{where}: rope_scaling / rope_parameters is not an object", "fix config.json")
    if not scaling and rope.get("rope_type", "default") != "default":
        scaling = dict(rope)
    tied = cfg.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise QuantError(f"{where}: tie_word_embeddings is {tied!r}, not true or false", "fix config.json")
    hidden, heads = number(int, "hidden_size"), number(int, "num_attention_heads")
    hp = Hyper(
        arch=arch,
        blocks=number(int, "num_hidden_layers"),
        mtp_blocks=number(int, "num_nextn_predict_layers", default=0, least=0),
        hidden=hidden,
        ff=number(int, "intermediate_size"),
        heads=heads,
        kv_heads=number(int, "num_key_value_heads", default=heads),
        head_dim=number(int, "head_dim", default=hidden // max(heads, 1)),
        context=number(int, "max_position_embeddings"),
        rms_eps=number(float, "rms_norm_eps"),
        vocab=number(int, "vocab_size"),
        rope_theta=float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        rope_scaling=scaling,
        tied=tied,
    )
    kind = str(scaling.get("rope_type") or scaling.get("type") or "default")
    if kind == "llama3" and arch != "llama":
        raise QuantError(f"{where}: llama3 RoPE scaling on {arch}", "llama.cpp applies it to llama models only")
    if kind != "default" and not isinstance(scaling.get("factor", 1.0), (int, float)):
        raise QuantError(f"{where}: the RoPE scaling factor is {scaling.get('factor')!r}", "fix config.json")
    return hp


def add_hyperparameters(writer: gguf.GGUFWriter, hp: Hyper, blocks: int) -> None:
    """The `{arch}.*` keys llama.cpp reads (block_count given: the companion counts its MTP blocks)."""
    writer.add_context_length(hp.context)
    writer.add_embedding_length(hp.hidden)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(hp.ff)
    writer.add_head_count(hp.heads)
    writer.add_head_count_kv(hp.kv_heads)
    writer.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.hidden // hp.heads:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    writer.add_layer_norm_rms_eps(hp.rms_eps)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_vocab_size(hp.vocab)
    kind = str(hp.rope_scaling.get("rope_type") or hp.rope_scaling.get("type") or "default")
    factor = float(hp.rope_scaling.get("factor") or 1.0)
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        original = hp.rope_scaling.get("original_max_position_embeddings")
        if original:
            writer.add_rope_scaling_orig_ctx_len(int(original))
    elif kind not in ("default", "llama3"):  # llama3 scaling travels as the rope_freqs tensor
        raise QuantError(
            f"RoPE scaling {kind!r} has no llama.cpp equivalent", "export with linear, yarn or llama3 scaling"
        )


def llama3_rope_factors(hp: Hyper) -> np.ndarray[Any, Any] | None:
    """Llama 3.1's frequency-dependent RoPE scaling as llama.cpp's `rope_freqs` divisors, or None."""
    scaling = hp.rope_scaling
    if str(scaling.get("rope_type") or scaling.get("type")) != "llama3":
        return None
    factor = float(scaling.get("factor", 8.0))
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    original = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim)
    wavelengths = 2 * math.pi / freqs
    smooth = (original / wavelengths - low) / (high - low)
    middle = 1.0 / ((1 - smooth) / factor + smooth)
    divisors = np.where(wavelengths < original / high, 1.0, np.where(wavelengths > original / low, factor, middle))
    return divisors.astype(np.float32)


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: its GGUF name, its source, its shape (HF order) and the row transform."""

    gguf_name: str
    source: str
    shape: tuple[int, ...]
    permute_heads: int = 0  # llama q/k: heads whose rows go to llama.cpp's rotary order; 0 = as is
    mtp: bool = False


def expected_shapes(hp: Hyper, block: int) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for one decoder block, from the config."""
    p = f"model.layers.{block}."
    q_rows, kv_rows = hp.heads * hp.head_dim, hp.kv_heads * hp.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        p + "input_layernorm.weight": (hp.hidden,),
        p + "self_attn.q_proj.weight": (q_rows, hp.hidden),
        p + "self_attn.k_proj.weight": (kv_rows, hp.hidden),
        p + "self_attn.v_proj.weight": (kv_rows, hp.hidden),
        p + "self_attn.o_proj.weight": (hp.hidden, q_rows),
        p + "post_attention_layernorm.weight": (hp.hidden,),
        p + "mlp.gate_proj.weight": (hp.ff, hp.hidden),
        p + "mlp.up_proj.weight": (hp.ff, hp.hidden),
        p + "mlp.down_proj.weight": (hp.hidden, hp.ff),
    }
    if hp.arch == "qwen2":
        shapes |= {p + f"self_attn.{x}_proj.bias": (n,) for x, n in (("q", q_rows), ("k", kv_rows), ("v", kv_rows))}
    if hp.arch == "qwen3":
        shapes |= {p + "self_attn.q_norm.weight": (hp.head_dim,), p + "self_attn.k_norm.weight": (hp.head_dim,)}
    return shapes


def mtp_shapes(hp: Hyper, block: int) -> dict[str, tuple[int, ...]]:
    p = f"model.layers.{block}."
    return {
        p + "eh_proj.weight": (hp.hidden, 2 * hp.hidden),
        p + "enorm.weight": (hp.hidden,),
        p + "hnorm.weight": (hp.hidden,),
    }


def plan_tensors(ckpt: Checkpoint, hp: Hyper) -> list[TensorPlan]:
    """Every output tensor (main blocks first, then MTP blocks), checked against the config."""
    total = hp.blocks + hp.mtp_blocks
    names = gguf.get_tensor_name_map(hp.gguf_arch, total)
    expected: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (hp.vocab, hp.hidden),
        "model.norm.weight": (hp.hidden,),
    }
    if not hp.tied:
        expected["lm_head.weight"] = (hp.vocab, hp.hidden)
    for block in range(total):
        expected |= expected_shapes(hp, block)
        if block >= hp.blocks:
            expected |= mtp_shapes(hp, block)
    optional_mtp = {"shared_head.norm.weight", "shared_head.head.weight", "embed_tokens.weight"}
    mtp_prefixes = tuple(f"model.layers.{block}." for block in range(hp.blocks, total))
    if mtp_prefixes and not any(name.startswith(mtp_prefixes) for name in ckpt.tensors):
        raise QuantError(  # a trainer's intermediate save from before the heads rode along with each checkpoint
            f"{ckpt.path}/config.json declares {hp.mtp_blocks} MTP layer(s) (num_nextn_predict_layers) the checkpoint does not hold",
            "export the run's final/ (it carries them), or delete that key from config.json to export this one without heads",
        )
    plans = []
    for source, shape in expected.items():
        ref = ckpt.tensors.get(source)
        if ref is None:
            raise QuantError(f"{ckpt.path} has no tensor {source}", "the checkpoint is incomplete: save it again")
        if ref.shape != shape:
            raise QuantError(
                f"tensor {source} has shape {list(ref.shape)}, the config says {list(shape)}",
                "the checkpoint and its config.json do not match",
            )
        plans.append(plan_for(source, shape, hp, names))
    for source, ref in ckpt.tensors.items():
        if source in expected or source == "lm_head.weight":
            continue
        layer = _LAYER.match(source)
        if layer and int(layer.group(1)) >= hp.blocks and f"{layer.group(2)}.{layer.group(3)}" in optional_mtp:
            plans.append(plan_for(source, ref.shape, hp, names))
        elif source.endswith("rotary_emb.inv_freq"):
            continue  # a buffer some older checkpoints saved; llama.cpp computes it
        else:
            raise QuantError(
                f"{ckpt.path} has a tensor {source} that {hp.arch} does not have", "export a plain checkpoint"
            )
    return plans


def plan_for(source: str, shape: tuple[int, ...], hp: Hyper, names: gguf.TensorNameMap) -> TensorPlan:
    layer = _LAYER.match(source)
    mtp = bool(layer) and int(layer.group(1)) >= hp.blocks  # type: ignore[union-attr]
    if layer and mtp and layer.group(2) in _NEXTN:
        return TensorPlan(f"blk.{layer.group(1)}.{_NEXTN[layer.group(2)]}.{layer.group(3)}", source, shape, mtp=True)
    target = names.get_name(source, try_suffixes=(".weight", ".bias"))
    if target is None:
        raise QuantError(f"tensor {source} has no llama.cpp name for {hp.arch}", "export a plain checkpoint")
    heads = 0
    if hp.arch == "llama" and source.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
        heads = hp.heads if "q_proj" in source else hp.kv_heads
    return TensorPlan(target, source, shape, heads, mtp)


def to_llama_rotary(rows: np.ndarray[Any, Any], head_dim: int) -> np.ndarray[Any, Any]:
    """Permute whole heads of q/k rows from HF's half-split layout to llama.cpp's interleaved one."""
    heads = rows.shape[0] // head_dim
    return rows.reshape(heads, 2, head_dim // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def from_llama_rotary(rows: np.ndarray[Any, Any], head_dim: int) -> np.ndarray[Any, Any]:
    """The inverse of `to_llama_rotary` (reading an export back)."""
    heads = rows.shape[0] // head_dim
    return rows.reshape(heads, head_dim // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
