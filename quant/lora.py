"""A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), read without torch.

Merging needs no torch either: W' = W + scale * B @ A is done in numpy block by block while the base
tensor streams through the export, so merging costs no more memory than exporting. scale is
alpha / r (alpha / sqrt(r) with rsLoRA), as PEFT computes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from quant.checkpoint import TensorRef, load_json, read_safetensors_header, safetensors_files
from quant.errors import QuantError

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
    rank, alpha = int(config.get("r") or 0), float(config.get("lora_alpha") or 0)
    if rank <= 0:
        raise QuantError(f"{path / 'adapter_config.json'} has no rank r", "is it a complete adapter?")
    tensors: dict[str, TensorRef] = {}
    for file in safetensors_files(path, "adapter_model"):
        tensors |= read_safetensors_header(file)
    pairs: dict[str, LoraPair] = {}
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
    return Adapter(path, rank, alpha, scale, pairs)
