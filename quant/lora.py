"""A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), read without torch.

Merging needs no torch either: W' = W + scale * B @ A is done in numpy block by block while the base
tensor streams through the export, so merging costs no more memory than exporting. scale is
alpha / r (alpha / sqrt(r) with rsLoRA), as PEFT computes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from quant.architectures import plan_tensors, read_hyper, to_llama_rotary
from quant.checkpoint import (
    Checkpoint,
    TensorRef,
    load_json,
    open_checkpoint,
    read_safetensors_header,
    safetensors_files,
)
from quant.errors import QuantError
from quant.gguf_out import OutTensor, Writer, hidden_partial, write_gguf

_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraPair:
    a: TensorRef  # rank x in
    b: TensorRef  # out x rank


@dataclass
class Adapter:
    path: Path
    rank: int
    alpha: float
    scale: float  # what B @ A is multiplied by when merged
    pairs: dict[str, LoraPair]  # base tensor name (model.layers.0.self_attn.q_proj.weight) -> factors


def open_adapter(path: Path) -> Adapter:
    """Read and check an adapter; DoRA, per-module ranks and extra saved modules are refused by name."""
    if not path.is_dir():
        raise QuantError(f"{path} is not a directory", "give a PEFT adapter directory (adapter_config.json)")
    config = load_json(path / "adapter_config.json")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise QuantError(f"{path} is a {config.get('peft_type')} adapter", "export LoRA adapters")
    if config.get("use_dora"):
        raise QuantError(f"{path} is a DoRA adapter", "llama.cpp has no DoRA: merge it in PEFT and export the result")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise QuantError(f"{path} uses per-module ranks or alphas", "export adapters with one rank and alpha")
    rank, alpha = config.get("r") or 0, config.get("lora_alpha") or 8  # PEFT's default alpha
    if (
        isinstance(rank, bool)
        or not isinstance(rank, int)
        or isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
    ):
        raise QuantError(f"{path / 'adapter_config.json'}: r and lora_alpha must be numbers", "is it a PEFT adapter?")
    if rank <= 0:
        raise QuantError(f"{path / 'adapter_config.json'} has no rank r", "is it a complete adapter?")
    tensors: dict[str, TensorRef] = {}
    for file in safetensors_files(path, "adapter_model"):
        tensors |= read_safetensors_header(file)
    pairs: dict[str, LoraPair] = {}
    tensors = {
        name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."): ref
        for name, ref in tensors.items()
    }
    for name, ref in tensors.items():
        if not name.endswith(".lora_A.weight"):
            if not name.endswith(".lora_B.weight"):
                raise QuantError(
                    f"{path}: adapter tensor {name} is not a LoRA factor (saved modules, embedding LoRA, DoRA)",
                    "train adapters on linear layers only, or merge in PEFT and export the result",
                )
            continue
        module = name.removesuffix(".lora_A.weight").removeprefix(_PREFIX)
        b = tensors.get(name.replace(".lora_A.", ".lora_B."))
        if b is None or ref.shape[0] != rank or b.shape[1] != rank:
            raise QuantError(f"{path}: the factors of {module} do not pair up at rank {rank}", "save the adapter again")
        pairs[f"{module}.weight"] = LoraPair(ref, b)
    if not pairs:
        raise QuantError(f"{path} holds no LoRA factors", "is it a complete adapter?")
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return Adapter(path, rank, float(alpha), scale, pairs)


def adapter_base(adapter_dir: Path) -> Path:
    """The adapter's base checkpoint as its config names it, when that is a local directory."""
    named = str(load_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path") or "")
    for candidate in (Path(named), adapter_dir / named):  # as given, or relative to the adapter
        if named and candidate.is_dir():
            return candidate
    raise QuantError(
        f"the base of adapter {adapter_dir} ({named or 'not named'}) is not a local checkpoint directory",
        "give it with --base DIR",
    )


def export_adapter(adapter_dir: Path, base: Path, output: Path, type_name: str = "f32") -> int:
    """Write the adapter alone as a GGUF LoRA adapter llama.cpp loads over the base's export
    (`Llama(lora_path=...)`); returns the number of factor pairs written.

    Tensors are `<base tensor>.lora_a` (rank x in) and `.lora_b` (out x rank), B permuted like the
    base's llama q/k rows. llama.cpp scales by alpha / rank, so an rsLoRA adapter (alpha / sqrt(rank))
    is written with alpha * sqrt(rank).
    """
    kinds = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
    }
    type_name = type_name.lower()
    if type_name not in kinds:
        raise QuantError(f"an adapter is exported as f32, f16 or bf16, not {type_name}", "give --type f32, f16 or bf16")
    adapter = open_adapter(adapter_dir)
    ckpt = open_checkpoint(base)
    hp = read_hyper(ckpt)
    check_adapter(adapter, ckpt)
    plans = {p.source: p for p in plan_tensors(ckpt, hp)}
    tensors = []
    for source, plan in plans.items():
        pair = adapter.pairs.get(source)
        if pair is None:
            continue
        if plan.mtp:  # the main GGUF has no MTP blocks: llama.cpp would fail on these factors
            raise QuantError(
                f"adapter {adapter_dir} changes the MTP block tensor {source}",
                "merge it into its base instead (--merge)",
            )
        tensors.append(OutTensor(f"{plan.gguf_name}.lora_a", kinds[type_name], pair.a.shape, _whole(pair.a, 0, 0)))
        tensors.append(
            OutTensor(
                f"{plan.gguf_name}.lora_b",
                kinds[type_name],
                pair.b.shape,
                _whole(pair.b, plan.permute_heads, hp.head_dim),
            )
        )
    partial = hidden_partial(output)
    writer = Writer(partial, hp.name)
    writer.add_name(adapter_dir.name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.scale * adapter.rank)
    try:
        write_gguf(writer, tensors, None, "adapter")
        os.replace(partial, output)
    except OSError as exc:
        raise QuantError(
            f"cannot write {output} ({exc.strerror or exc})", "free disk space or give a writable path"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return len(tensors) // 2


def _whole(ref: TensorRef, permute_heads: int, head_dim: int) -> Callable[[], Iterator[np.ndarray[Any, Any]]]:
    """A small tensor (a LoRA factor) in one block, B's rows permuted like the base's llama q/k."""

    def blocks() -> Iterator[np.ndarray[Any, Any]]:
        rows = ref.read()
        yield to_llama_rotary(rows, head_dim) if permute_heads else rows

    return blocks


def check_adapter(adapter: Adapter, ckpt: Checkpoint) -> None:
    """Every factor pair must target a tensor of the base with the shape B @ A makes."""
    for name, pair in adapter.pairs.items():
        base = ckpt.tensors.get(name)
        if base is None:
            raise QuantError(
                f"adapter {adapter.path} targets {name}, which {ckpt.path} does not have",
                "pair the adapter with its base",
            )
        if (pair.b.shape[0], pair.a.shape[1]) != base.shape:
            raise QuantError(
                f"adapter factors for {name} make {[pair.b.shape[0], pair.a.shape[1]]}, the base tensor is {list(base.shape)}",
                "pair the adapter with its base",
            )
