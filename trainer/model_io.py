"""Loading a student (a Hugging Face directory or a GGUF) and making it speak AutoThink.

- A GGUF goes through transformers' GGUF loader (dequantized to float32). It comes back marked as
  quantized and refuses to train or save until those marks are cleared (../shared/FACTS.md); the
  SmolLM pre-tokenizer (`smollm`: digits split one by one, then byte-level) is restored, because
  transformers rebuilds a plain byte-level one and the exported GGUF must tokenize as llama.cpp does.
- The AutoThink tags become added special tokens of the student's tokenizer, so each is one token
  (and a CONTROL token once exported). A new embedding row starts as the mean of the rows of the
  sub-words the tag was split into before (its "name"), and so does the output row when the head is
  not tied: the tag starts near what the model already associates with its text.
- The chat template gets a comment naming the AutoThink format, so `profiles.detect_profile` finds
  the `kat` profile from the template too (the vocabulary alone already does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from katpilot import gate
from katpilot.errors import KatpilotError
from katpilot.gguf_file import FIM_TRIPLES
from quant.checkpoint import quiet_about_mtp_heads

# A fixed order, so two runs give the tags the same ids.
AUTOTHINK_TAGS = (
    gate.JUDGE_OPEN,
    gate.JUDGE_CLOSE,
    gate.THINK_ON,
    gate.THINK_OFF,
    gate.THINK_OPEN,
    gate.THINK_CLOSE,
    gate.ANSWER_OPEN,
    gate.ANSWER_CLOSE,
)
STARCODER_FIM = FIM_TRIPLES[1]  # what a student without fill-in-the-middle tokens gets
TEMPLATE_NOTE = (
    "{#- AutoThink (katpilot): the assistant writes <judge> ... </judge>, then <think_on> <think> ... </think>"
    " <answer> ... </answer> or <think_off> <answer> ... </answer> -#}\n"
)


def load_student(spec: str | Path) -> tuple[Any, Any]:
    """The model and tokenizer at `spec`: a checkpoint directory, a GGUF file, or a model name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _resolve(spec)
    if not path.exists():
        raise KatpilotError(
            f"no model at {path}", "give a checkpoint directory, a GGUF file, or a name `katpilot models` lists"
        )
    if path.is_file():
        from katpilot.gguf_file import read_gguf

        read_gguf(path)  # a truncated or corrupt GGUF is one line naming it, before transformers parses it
    try:
        if path.is_dir() and (path / "adapter_config.json").is_file():  # a LoRA run's final/: merged in
            from peft import AutoPeftModelForCausalLM

            _check_adapter_base(path)

            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype="auto").merge_and_unload()
        elif path.is_dir():
            tokenizer = AutoTokenizer.from_pretrained(path)
            with quiet_about_mtp_heads(path):
                model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        else:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
            _clear_gguf_marks(model)
            _restore_pre_tokenizer(path, tokenizer)
    except (OSError, ValueError, KeyError) as exc:
        raise KatpilotError(
            f"cannot load the model {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            "give a Hugging Face checkpoint directory or a GGUF transformers can read (llama, qwen2, qwen3)",
        ) from None
    return model, tokenizer


def add_autothink_tokens(model: Any, tokenizer: Any) -> list[int]:
    """Add the tags as special tokens (mean-of-sub-words rows); returns the ids of those added."""
    added = add_special_tokens(model, tokenizer, AUTOTHINK_TAGS)
    _note_template(tokenizer)
    return added


def fim_tokens(tokenizer: Any) -> tuple[str, str, str] | None:
    """The tokenizer's (prefix, suffix, middle) tokens, found as the LSP finds a GGUF's."""
    vocab = tokenizer.get_vocab()
    return next((t for t in FIM_TRIPLES if all(x in vocab for x in t)), None)


def ensure_fim_tokens(model: Any, tokenizer: Any) -> list[int]:
    """A student without fill-in-the-middle tokens gets StarCoder's (`<fim_prefix>`, `<fim_suffix>`,
    `<fim_middle>`): one of the triples the GGUF reader knows, so the exported model's LSP completions
    use FIM with no setting. Returns the ids added (none when it has a triple already)."""
    if fim_tokens(tokenizer) is not None:
        return []
    return add_special_tokens(model, tokenizer, STARCODER_FIM)


def add_special_tokens(model: Any, tokenizer: Any, names: Sequence[str]) -> list[int]:
    """Add `names` as special tokens, each new embedding (and untied output) row the mean of the rows of
    the sub-words the name was split into before; returns the ids of those added."""
    import torch
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [name for name in names if name not in vocab]
    if not missing:
        return []
    pieces = {name: tokenizer.encode(name, add_special_tokens=False) for name in missing}
    tokenizer.add_tokens([AddedToken(name, special=True, normalized=False) for name in missing], special_tokens=True)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != embed.data_ptr()
    added = []
    with torch.no_grad():
        for name in missing:
            new_id = tokenizer.convert_tokens_to_ids(name)
            embed[new_id] = embed[pieces[name]].mean(dim=0)
            if untied and head is not None:
                head.weight[new_id] = head.weight[pieces[name]].mean(dim=0)
            added.append(int(new_id))
    return added


def _note_template(tokenizer: Any) -> None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and gate.THINK_ON not in template:
        tokenizer.chat_template = TEMPLATE_NOTE + template


def _check_adapter_base(adapter: Path) -> None:
    """An adapter trained on a GGUF names the GGUF's folder as its base, which transformers cannot load
    alone: say so, and how to hand the next stage a model, before peft fails on it."""
    from quant.errors import QuantError
    from quant.lora import adapter_base

    try:
        base = adapter_base(adapter)
    except QuantError:
        return  # a hub name or nothing local: peft says what it cannot find
    if not (base / "config.json").is_file():
        raise KatpilotError(
            f"the LoRA adapter {adapter} names {base} as its base, which holds no Hugging Face checkpoint "
            "(the run trained on a GGUF)",
            "train with merge = true and give its final/merged, or train with method = full",
        )


def _resolve(spec: str | Path) -> Path:
    path = Path(spec).expanduser()
    if path.exists():
        return path
    from katpilot.config import load_settings
    from katpilot.models import resolve_model

    try:
        return resolve_model(str(spec), load_settings().settings)
    except KatpilotError:
        raise KatpilotError(
            f"no model at {spec}", "give a checkpoint directory, a GGUF file, or a name `katpilot models` lists"
        ) from None


def _clear_gguf_marks(model: Any) -> None:
    """transformers marks a GGUF-loaded model as quantized; it is plain float32 (FACTS.md)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _restore_pre_tokenizer(path: Path, tokenizer: Any) -> None:
    """Put back the `smollm` pre-tokenizer the GGUF names (transformers drops its digit split)."""
    from tokenizers import pre_tokenizers

    from katpilot.gguf_file import read_gguf_header

    pre = read_gguf_header(path).metadata.get("tokenizer.ggml.pre")
    if pre == "smollm":
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
