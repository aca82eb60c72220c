"""A checkpoint's Hugging Face tokenizer as GGUF metadata llama.cpp tokenizes with exactly as HF does.

The pre-tokenizer: llama.cpp picks its splitting regexes by a name (`tokenizer.ggml.pre`). Its own
converter finds the name by hashing the tokenization of a fixed text against a table of known
tokenizers. We read the tokenizer's `pre_tokenizer` description instead (which splitting rules, in
which order) and map the few we know to llama.cpp's names: it needs no table of hashes, and a
tokenizer whose rules we have not matched is an error naming them, never a silent `default` that
would split text differently from training. The tests prove each mapping on mixed code, digits,
multilingual text and emoji against the `tokenizers` library.

Token types follow llama.cpp's rules: added tokens marked special (and the AutoThink tags, always)
become CONTROL, so they are matched in prompts only with special parsing on and show in output only
when detokenized with `special=True` (katpilot's engine does both); other added tokens USER_DEFINED.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from katpilot.gate import KAT_TAGS
from quant.checkpoint import load_json
from quant.errors import QuantError

_GPT2_SPLIT = "bytelevel"  # ByteLevel(use_regex=True): GPT-2's regex, then bytes to unicode
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Splitting rules, in order -> llama.cpp's pre-tokenizer name (llama-vocab.cpp's regexes for it).
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    ("digits", _GPT2_SPLIT): "smollm",
    (_GPT2_SPLIT,): "gpt-2",
    (f"split:{_QWEN2_REGEX}",): "qwen2",
    (f"split:{_LLAMA3_REGEX}",): "llama-bpe",
}
_NORMALIZERS = (None, "NFC")  # llama.cpp applies none; NFC (Qwen) changes nothing in NFC text


@dataclass(frozen=True)
class VocabSummary:
    pre: str
    tokens: int
    merges: int
    control: list[str]


def split_rules(pre_tokenizer: Any) -> tuple[str, ...]:
    """The `pre_tokenizer` entry of tokenizer.json as a tuple of rules ("digits", "split:<regex>", ...)."""
    if pre_tokenizer is None:
        return ()
    kind = pre_tokenizer.get("type")
    if kind == "Sequence":
        return tuple(rule for item in pre_tokenizer.get("pretokenizers", []) for rule in split_rules(item))
    if kind == "ByteLevel":
        if pre_tokenizer.get("add_prefix_space"):
            return ("bytelevel+prefix-space",)
        return (_GPT2_SPLIT,) if pre_tokenizer.get("use_regex", True) else ()
    if kind == "Digits":
        return ("digits",) if pre_tokenizer.get("individual_digits") else ("digit-runs",)
    if kind == "Split":
        pattern = pre_tokenizer.get("pattern", {})
        behaviour = pre_tokenizer.get("behavior", "Isolated")
        if pre_tokenizer.get("invert") or behaviour != "Isolated":
            return (f"split({behaviour}):{pattern}",)
        return (f"split:{pattern.get('Regex', pattern.get('String'))}",)
    return (str(kind),)


def pre_tokenizer_name(tokenizer: dict[str, Any], where: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, or an error naming what we do not know."""
    normalizer = (tokenizer.get("normalizer") or {}).get("type")
    if normalizer not in _NORMALIZERS:
        raise QuantError(
            f"{where}: normalizer {normalizer!r} has no llama.cpp equivalent", "export a BPE tokenizer without one"
        )
    rules = split_rules(tokenizer.get("pre_tokenizer"))
    name = PRE_TOKENIZERS.get(rules)
    if name is None:
        shown = " + ".join(rule[:80] for rule in rules) or "none"
        raise QuantError(
            f"{where}: unknown pre-tokenizer ({shown}); llama.cpp would split text differently from training",
            f"known: {', '.join(PRE_TOKENIZERS.values())}; add its rules to quant/vocab.py PRE_TOKENIZERS",
        )
    return name


def _merges(model: dict[str, Any]) -> list[str]:
    merges = model.get("merges") or []
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _add_flags(checkpoint: Path, tokenizer: dict[str, Any], config: dict[str, Any]) -> tuple[bool, bool]:
    """Whether HF adds BOS / EOS to a plain encode: tokenizer_config's flags, else the post-processor."""
    add_bos, add_eos = config.get("add_bos_token"), config.get("add_eos_token")
    post = tokenizer.get("post_processor") or {}
    steps = post.get("processors", [post]) if isinstance(post, dict) else []  # Llama 3: ByteLevel + template
    template: list[Any] = next((step["single"] for step in steps if isinstance(step, dict) and step.get("single")), [])
    pieces = [next(iter(step)) for step in template if isinstance(step, dict) and step]
    if add_bos is None:
        add_bos = bool(pieces) and pieces[0] == "SpecialToken"
    if add_eos is None:
        add_eos = bool(pieces) and pieces[-1] == "SpecialToken"
    return bool(add_bos), bool(add_eos)


def add_tokenizer(writer: gguf.GGUFWriter, checkpoint: Path, vocab_size: int) -> VocabSummary:
    """Write tokens, types, merges, special ids, flags, pre-tokenizer and chat template."""
    path = checkpoint / "tokenizer.json"
    tokenizer = load_json(path)
    model = tokenizer.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        model = model if isinstance(model, dict) else {}
        raise QuantError(f"{path}: a {model.get('type')} tokenizer", "katpilot quant exports byte-level BPE tokenizers")
    pre = pre_tokenizer_name(tokenizer, path)
    try:
        by_id: dict[int, str] = {int(i): str(t) for t, i in (model.get("vocab") or {}).items()}
        added = {int(a["id"]): a for a in tokenizer.get("added_tokens") or []}
        by_id |= {i: str(a["content"]) for i, a in added.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise QuantError(f"{path}: the vocabulary or an added token is malformed", "save the tokenizer again") from None
    if not by_id or max(by_id) >= vocab_size:
        raise QuantError(
            f"{path} has token ids up to {max(by_id, default=-1)} but the model's vocab_size is {vocab_size}",
            "resize the embeddings to the tokenizer (resize_token_embeddings) and save again",
        )
    tokens, types, control = [], [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added and (added[i].get("special") or text in KAT_TAGS):
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL)
            control.append(text)
        elif i in added:
            tokens.append(text)
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    merges = _merges(model)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    config = load_json(checkpoint / "tokenizer_config.json") if (checkpoint / "tokenizer_config.json").is_file() else {}
    special = gguf.SpecialVocab(checkpoint, load_merges=False, n_vocab=vocab_size)
    special.add_special_token = {}  # ours below: what HF does to a plain encode, always written
    special.add_to_gguf(writer, quiet=True)
    add_bos, add_eos = _add_flags(checkpoint, tokenizer, config)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    return VocabSummary(pre, len(by_id), len(merges), control)
