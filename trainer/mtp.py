"""Multi-Token Prediction heads (DeepSeek-V3, section 2.2) for a Hugging Face llama / qwen2 / qwen3 causal LM.

D sequential modules ride on the main model. Module k (1-based) at position i reads the embedding of
token i+k and the previous depth's state at i, and predicts token i+k+1:

    h^k_i = norm(Block_k(eh_proj([enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)])))
    P^k_i = softmax(Head(h^k_i))

- The concatenation puts the embedding FIRST, as Megatron-LM, vLLM, transformers' `MtpLayer` and
  llama.cpp's nextn tensors do (the paper's equation writes the other order; the released weights
  follow the code). `eh_proj` maps 2d -> d without bias.
- `Block_k` is one decoder layer of the model's own class (`LlamaDecoderLayer`, `Qwen2DecoderLayer`,
  `Qwen3DecoderLayer`, ...), built from the model's config with layer index L+k-1 (L = the model's
  blocks), fed the model's own rotary embeddings and a causal mask built the way the model builds it.
- `Emb`, `norm` and `Head` are the model's embedding, final norm and output head: the same modules,
  not copies, so they are not parameters of the heads and are trained (or frozen, or LoRA-adapted)
  with the model.
- h^0 is the main model's last hidden state AFTER its final norm: `outputs.hidden_states[-1]` of a
  forward with `output_hidden_states=True` (transformers 5 ties that entry to the normed
  `last_hidden_state`). That is what Megatron-LM's MTP reads (its decoder output includes the final
  layernorm), what transformers' own MTP drafting passes (`hidden_states[-1]`), and what vLLM / SGLang
  hand over; the paper only says "the representation given by the main model". Each depth hands the
  next the state its head reads (after the shared final norm), as Megatron and transformers' `MtpLayer`
  (`post_norm`) do; `hnorm` renormalises it anyway. So the heads need no second forward and no hook.
- Loss: (lambda / D) * sum over k of the cross-entropy of module k's prediction of token i+k+1 against
  `labels[i+k+1]` (labels are aligned with `input_ids`, as for the model's own loss; -100 ignored).
  lambda follows DeepSeek-V3: 0.3 for the first part of training, then 0.1 (`mtp_lambda`).

Checkpoints use DeepSeek-V3's layout, which `quant` exports to a companion GGUF unchanged: module k's
tensors are `model.layers.{L+k-1}.eh_proj.weight`, `.enorm.weight`, `.hnorm.weight` and the block's own
(`self_attn.*`, `mlp.*`, `input_layernorm`, `post_attention_layernorm`), and `num_nextn_predict_layers`
= D in config.json. No `shared_head.*` or `embed_tokens` copies are written: the heads share the
model's, and quant (and llama.cpp's nextn graphs) fall back to the model's own when they are absent.
The heads go to `mtp.safetensors`, listed in `model.safetensors.index.json` so that transformers and
quant, which read a lone `model.safetensors` or the files an index names, both find them; a
single-file checkpoint becomes a one-shard one (`model.safetensors` renamed, its bytes untouched).

In a `transformers.Trainer` (the model's forward already computes the main loss):

    outputs = model(**inputs, output_hidden_states=True)
    lam = mtp_lambda(self.state.global_step, self.state.max_steps)
    mtp = mtp_loss(heads, inputs["input_ids"], inputs["labels"], outputs.hidden_states[-1],
                   attention_mask=inputs.get("attention_mask"), lam=lam, num_items_in_batch=num_items_in_batch)
    loss = outputs.loss + mtp.loss
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from katpilot.errors import KatpilotError
from katpilot.eval.records import write_atomic
from quant.checkpoint import MTP_HEADS_FILE, load_json, read_safetensors_header

IGNORE_INDEX = -100  # labels that take no part in the loss, as in transformers
# DeepSeek-V3 weighted the MTP loss 0.3 for its first 10T training tokens and 0.1 for the last 4.8T.
DEEPSEEK_V3_LAMBDAS = (0.3, 0.1)
DEEPSEEK_V3_SWITCH = 10.0 / 14.8
HEADS_FILE = MTP_HEADS_FILE
_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_ONE_SHARD = "model-00001-of-00001.safetensors"  # a lone model.safetensors, once the heads' index lists it
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def mtp_lambda(
    step: int,
    total_steps: int,
    *,
    switch_at: float = DEEPSEEK_V3_SWITCH,
    first: float = DEEPSEEK_V3_LAMBDAS[0],
    then: float = DEEPSEEK_V3_LAMBDAS[1],
) -> float:
    """The MTP loss weight at `step` (0-based) of `total_steps`: `first` before `switch_at` of the run,
    `then` after (DeepSeek-V3: 0.3 for the first 10/14.8 of its tokens, then 0.1)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, not {total_steps}")
    if not 0.0 <= switch_at <= 1.0:
        raise ValueError(f"switch_at is a fraction of the run, not {switch_at}")
    return first if step < switch_at * total_steps else then


@dataclass(frozen=True)
class SharedParts:
    """What the heads borrow from the model: held by reference, so they are not the heads' parameters."""

    embed: nn.Module
    norm: nn.Module
    head: nn.Module
    rotary: nn.Module


class MTPModule(nn.Module):
    """One depth: the two input norms, the 2d -> d projection, and a decoder block of the model's class."""

    def __init__(self, config: Any, block: nn.Module, norm_cls: type[nn.Module]) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.enorm = norm_cls(hidden, eps=config.rms_norm_eps)
        self.hnorm = norm_cls(hidden, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * hidden, hidden, bias=False)
        self.block = block

    def forward(
        self,
        embedded: torch.Tensor,
        previous: torch.Tensor,
        *,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: Any,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        """The block's output (before the final norm) for embeddings of tokens i+k and states h^{k-1}_i."""
        mixed = self.eh_proj(torch.cat([self.enorm(embedded), self.hnorm(previous)], dim=-1))
        out: Any = self.block(
            mixed, attention_mask=attention_mask, position_ids=position_ids, position_embeddings=position_embeddings
        )
        result: torch.Tensor = out[0] if isinstance(out, tuple) else out  # transformers 4 layers return a tuple
        return result


def shared_parts(model: Any) -> tuple[Any, Any, SharedParts]:
    """The model (an `nn.Module`) under any peft wrapper, its decoder, and the parts the heads share."""
    base: Any = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder: Any = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    head: Any = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    missing = [
        name
        for name, found in (
            ("a decoder with layers", decoder is not None and hasattr(decoder, "layers")),
            ("a final norm", hasattr(decoder, "norm")),
            ("rotary embeddings", hasattr(decoder, "rotary_emb")),
            ("an output head", head is not None),
        )
        if not found
    ]
    if missing:
        raise KatpilotError(
            f"{type(base).__name__} has no {', '.join(missing)}: MTP heads need a llama-like causal LM",
            "train a llama, qwen2 or qwen3 model",
        )
    assert decoder is not None and head is not None
    return base, decoder, SharedParts(base.get_input_embeddings(), decoder.norm, head, decoder.rotary_emb)


def plain_state(block: nn.Module) -> dict[str, torch.Tensor]:
    """A block's weights under its own names: a peft-wrapped layer's base weights, its adapters left out
    (a new adapter adds nothing yet)."""
    return {
        name.replace(".base_layer.", "."): value for name, value in block.state_dict().items() if "lora_" not in name
    }


class MTPHeads(nn.Module):
    """D sequential MTP modules on `model`, sharing its embedding, final norm and output head.

    A new block starts as a copy of the model's last block (it then already works on this residual
    stream) unless `init_from_last_block` is false; `eh_proj` starts from the model's initializer
    range, the norms at one."""

    def __init__(self, model: nn.Module, depth: int = 1, *, init_from_last_block: bool = True) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"MTP depth must be at least 1, not {depth}")
        base, decoder, shared = shared_parts(model)
        self.shared = shared
        self.depth = depth
        self.first_layer = int(base.config.num_hidden_layers)  # module k is checkpoint layer first_layer + k - 1
        # The blocks' own config: layer indices past the model's must still find their layer type.
        self.config = copy.deepcopy(base.config)
        self.config.num_hidden_layers = self.first_layer + depth
        types = getattr(self.config, "layer_types", None)
        if types:
            self.config.layer_types = [*types, *[types[-1]] * depth]
        last = decoder.layers[-1]
        self.layers = nn.ModuleList(
            MTPModule(self.config, type(last)(self.config, self.first_layer + k), type(decoder.norm))
            for k in range(depth)
        )
        weight = shared.embed.weight
        assert isinstance(weight, torch.Tensor)
        self.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            for module in self.modules_by_depth():
                module.eh_proj.weight.normal_(0.0, float(getattr(self.config, "initializer_range", 0.02)))
                if init_from_last_block:
                    module.block.load_state_dict(plain_state(last))

    def forward(
        self,
        input_ids: torch.Tensor,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Every depth's state h^k (k = 1..D, shape [batch, T-k, d]) from the main model's normed last
        hidden state `hidden` ([batch, T, d]). Position i of depth k has read tokens up to i+k and
        predicts token i+k+1; its last position drafts past the sequence."""
        length = input_ids.shape[1]
        if hidden.shape[:2] != input_ids.shape:
            raise ValueError(f"hidden states {tuple(hidden.shape)} do not match input_ids {tuple(input_ids.shape)}")
        if length <= self.depth:
            raise ValueError(f"{length} tokens are too few for {self.depth} MTP depths")
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).unsqueeze(0)
        states = []
        previous = hidden
        for k, module in enumerate(self.modules_by_depth(), start=1):
            kept = length - k
            embedded = self.shared.embed(input_ids[:, k:])
            positions = position_ids[:, k:]  # the position of token i+k, whose embedding comes in
            mask = None
            if attention_mask is not None:  # both the state at i and the token at i+k must be real
                mask = attention_mask[:, k:] * attention_mask[:, :kept]
            out = module(
                embedded,
                previous[:, :kept],
                position_embeddings=self.shared.rotary(embedded, positions),
                attention_mask=self._causal_mask(k, embedded, mask, positions),
                position_ids=positions,
            )
            previous = self.shared.norm(out)
            states.append(previous)
        return states

    def modules_by_depth(self) -> list[MTPModule]:
        """Module k at index k-1."""
        return [module for module in self.layers if isinstance(module, MTPModule)]

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """The model's output head on a depth's states."""
        result: torch.Tensor = self.shared.head(states)
        return result

    def _causal_mask(self, k: int, embedded: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor) -> Any:
        """The mask the model would build for depth k's block (full or sliding-window attention)."""
        types = getattr(self.config, "layer_types", None)
        kind = types[self.first_layer + k - 1] if types else "full_attention"
        build = create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
        return build(
            config=self.config, inputs_embeds=embedded, attention_mask=mask, cache=None, position_ids=positions
        )

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """The heads under DeepSeek-V3's checkpoint names (`model.layers.{L+k-1}.eh_proj.weight`, ...)."""
        return {
            self._checkpoint_name(k, name): value.detach()
            for k, module in enumerate(self.modules_by_depth())
            for name, value in module.state_dict().items()
        }

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy tensors named as `checkpoint_tensors` names them into the heads (all of them, exactly)."""
        for k, module in enumerate(self.modules_by_depth()):
            own = {name: tensors[self._checkpoint_name(k, name)] for name in module.state_dict()}
            module.load_state_dict(own, strict=True)

    def _checkpoint_name(self, k: int, name: str) -> str:
        return f"model.layers.{self.first_layer + k}.{name.removeprefix('block.')}"


@dataclass(frozen=True)
class MTPLoss:
    """The weighted MTP loss to add to the main loss, and each depth's cross-entropy (detached, for logs)."""

    loss: torch.Tensor
    depth_losses: list[torch.Tensor]


def mtp_loss(
    heads: MTPHeads,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    hidden: torch.Tensor,
    *,
    lam: float,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> MTPLoss:
    """(lam / D) * sum over depths k of the cross-entropy of depth k's prediction of token i+k+1.

    `hidden` is the main model's `outputs.hidden_states[-1]`; `labels` are aligned with `input_ids`
    (-100 ignored). Each depth's loss is a mean over its own counted targets, or, with
    `num_items_in_batch` (as `Trainer.compute_loss` receives it for gradient accumulation), its sum
    divided by that number. A depth with no counted target adds zero."""
    states = heads(input_ids, hidden, attention_mask, position_ids)
    depth_losses = []
    for k, state in enumerate(states, start=1):
        targets = labels[:, k + 1 :].to(state.device)  # the last position's target lies past the sequence
        counted = targets != IGNORE_INDEX
        # The output head on the counted positions only: a chat's labels are its answer, a fraction of
        # its tokens, and the 49,152-wide projection of the rest was most of a small model's MTP cost.
        logits = heads.logits(state[:, :-1][counted])
        total = F.cross_entropy(logits.float(), targets[counted], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else counted.sum().clamp(min=1)
        depth_losses.append(total / count)
    loss = lam / heads.depth * torch.stack(depth_losses).sum()
    return MTPLoss(loss, [part.detach() for part in depth_losses])


def save_mtp_heads(heads: MTPHeads, checkpoint_dir: Path) -> Path:
    """Write the heads beside the Hugging Face checkpoint in `checkpoint_dir` (saved first with
    `save_pretrained`): `mtp.safetensors`, its entries in the shard index, `num_nextn_predict_layers`
    in config.json. Saving again replaces the previous heads. Returns the heads' file."""
    config_path = checkpoint_dir / "config.json"
    config = load_json(config_path)
    if config.get("num_hidden_layers") != heads.first_layer:
        raise KatpilotError(
            f"{config_path} has {config.get('num_hidden_layers')} layers, the heads' model {heads.first_layer}",
            "save the heads beside a checkpoint of the model they were built on",
        )
    tensors = {name: value.to("cpu").contiguous() for name, value in heads.checkpoint_tensors().items()}
    path = checkpoint_dir / HEADS_FILE
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt"})
    os.replace(partial, path)
    _index_heads(checkpoint_dir, sorted(tensors), heads.first_layer)
    config["num_nextn_predict_layers"] = heads.depth
    write_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def carry_mtp_heads(source: Path, checkpoint_dir: Path) -> Path | None:
    """Copy the heads saved beside `source` (if any) unchanged beside `checkpoint_dir`, a later stage's
    save of the same model. SFT and RL do not train the heads, but must not drop them: the exported
    GGUF's MTP companion comes from the last stage's checkpoint. Returns the copied file, or None."""
    heads = source / HEADS_FILE
    if not heads.is_file():
        return None
    source_config = load_json(source / "config.json")
    config_path = checkpoint_dir / "config.json"
    config = load_json(config_path)
    if config.get("num_hidden_layers") != source_config.get("num_hidden_layers"):
        raise KatpilotError(
            f"{checkpoint_dir} and {source} have different numbers of layers", "carry heads between saves of one model"
        )
    with safe_open(str(heads), framework="pt") as handle:
        names = sorted(handle.keys())
    path = checkpoint_dir / HEADS_FILE
    partial = path.with_name(path.name + ".partial")
    shutil.copyfile(heads, partial)
    os.replace(partial, path)
    _index_heads(checkpoint_dir, names, int(config["num_hidden_layers"]))
    config["num_nextn_predict_layers"] = source_config.get("num_nextn_predict_layers", 1)
    write_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def carry_heads_on_save(source: Path, method: str) -> list[Any]:
    """For a full fine-tune of a model with heads: a callback that carries them beside every
    `checkpoint-N` as it is written (as `carry_mtp_heads` does for final/), so any checkpoint exports
    whole; without it, a checkpoint's config names MTP layers its weights do not hold. None needed
    otherwise (a LoRA's heads stay in its base)."""
    from transformers import TrainerCallback

    if method != "full" or not (source / HEADS_FILE).is_file():
        return []

    class CarryHeads(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                carry_mtp_heads(source, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return [CarryHeads()]


def load_mtp_heads(model: nn.Module, checkpoint_dir: Path) -> MTPHeads:
    """The heads saved beside `checkpoint_dir`'s weights (by `save_mtp_heads`, or any checkpoint in the
    same layout), on `model`, bit for bit."""
    config_path = checkpoint_dir / "config.json"
    config = load_json(config_path)
    depth = config.get("num_nextn_predict_layers") or 0
    if not isinstance(depth, int) or depth < 1:
        raise KatpilotError(
            f"{checkpoint_dir} has no MTP heads (num_nextn_predict_layers is {depth!r})",
            "build new heads with MTPHeads(model, depth), or give a checkpoint saved with its heads",
        )
    heads = MTPHeads(model, depth, init_from_last_block=False)
    if config.get("num_hidden_layers") != heads.first_layer:
        raise KatpilotError(
            f"{config_path} has {config.get('num_hidden_layers')} layers, the model {heads.first_layer}",
            "load the heads onto the model they were saved with",
        )
    expected = set(heads.checkpoint_tensors())
    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(checkpoint_dir):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                layer = _LAYER.match(name)
                if layer is None or int(layer.group(1)) < heads.first_layer:
                    continue
                if name not in expected:
                    raise KatpilotError(
                        f"{file} holds {name}, which katpilot's MTP heads do not have",
                        "they share the model's embedding, final norm and head: save the heads with katpilot",
                    )
                tensors[name] = handle.get_tensor(name)
    missing = sorted(expected - set(tensors))
    if missing:
        raise KatpilotError(f"{checkpoint_dir} lacks MTP tensor {missing[0]}", "save the heads again")
    heads.load_checkpoint_tensors(tensors)
    return heads


def _index_heads(directory: Path, names: list[str], first_layer: int) -> None:
    """List the heads' tensors in the shard index, making a lone model.safetensors a one-shard checkpoint.

    The index is written before model.safetensors is renamed: while that file exists, transformers and
    quant read it alone, so a save stopped half-way never leaves a checkpoint that cannot load."""
    single, index_path = directory / _SINGLE, directory / _INDEX
    if single.is_file():
        weight_map = dict.fromkeys(_tensor_sizes(single), _ONE_SHARD)
    elif index_path.is_file():
        index = load_json(index_path)
        weight_map = {k: v for k, v in index.get("weight_map", {}).items() if v != HEADS_FILE}
    else:
        raise KatpilotError(
            f"no {_SINGLE} or {_INDEX} in {directory}",
            "save the full model there first (save_pretrained; merge a LoRA adapter)",
        )
    taken = [name for name in weight_map if (layer := _LAYER.match(name)) and int(layer.group(1)) >= first_layer]
    if taken:
        raise KatpilotError(
            f"{directory / weight_map[taken[0]]} already holds MTP tensor {taken[0]}",
            "save the heads into a checkpoint written by save_pretrained",
        )
    weight_map |= dict.fromkeys(names, HEADS_FILE)
    stored = {
        file: single if file == _ONE_SHARD and single.is_file() else directory / file for file in weight_map.values()
    }
    total = sum(sum(_tensor_sizes(path).values()) for path in stored.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_atomic(index_path, json.dumps(index, indent=2) + "\n")
    if single.is_file():
        os.replace(single, directory / _ONE_SHARD)


def _weight_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors files, chosen as transformers and quant choose them."""
    if (directory / _SINGLE).is_file():
        return [directory / _SINGLE]
    if (directory / _INDEX).is_file():
        weight_map = load_json(directory / _INDEX).get("weight_map", {})
        return [directory / name for name in sorted(set(weight_map.values()))]
    raise KatpilotError(f"no {_SINGLE} or {_INDEX} in {directory}", "give a Hugging Face checkpoint directory")


def _tensor_sizes(path: Path) -> dict[str, int]:
    """Each tensor's size in bytes, from a safetensors header (no tensor data read)."""
    return {name: ref.nbytes for name, ref in read_safetensors_header(path).items()}
