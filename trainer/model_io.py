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

from pathlib import Path
from typing import Any

from katpilot import gate
from katpilot.errors import KatpilotError

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
TEMPLATE_NOTE = (
    "{#- AutoThink (katpilot): the assistant writes <judge> ... </judge>, then <think_on> <think> ... </think>"
    " <answer> ... </answer> or <think_off> <answer> ... </answer> -#}\n"
)


def load_student(spec: str | Path) -> tuple[Any, Any]:
    """The model and tokenizer at `spec`: a checkpoint directory, a GGUF file, or a model name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _resolve(spec)
    try:
        if path.is_dir():
            tokenizer = AutoTokenizer.from_pretrained(path)
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
    import torch
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [tag for tag in AUTOTHINK_TAGS if tag not in vocab]
    if not missing:
        _note_template(tokenizer)
        return []
    pieces = {tag: tokenizer.encode(tag, add_special_tokens=False) for tag in missing}
    tokenizer.add_tokens([AddedToken(tag, special=True, normalized=False) for tag in missing], special_tokens=True)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != embed.data_ptr()
    added = []
    with torch.no_grad():
        for tag in missing:
            new_id = tokenizer.convert_tokens_to_ids(tag)
            embed[new_id] = embed[pieces[tag]].mean(dim=0)
            if untied and head is not None:
                head.weight[new_id] = head.weight[pieces[tag]].mean(dim=0)
            added.append(int(new_id))
    _note_template(tokenizer)
    return added


def _note_template(tokenizer: Any) -> None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and gate.THINK_ON not in template:
        tokenizer.chat_template = TEMPLATE_NOTE + template


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
