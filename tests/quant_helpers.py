"""Real Hugging Face checkpoints for the export tests, built offline: the embedded model through
transformers, and tiny llama / qwen2 / qwen3 models with random weights and SmolLM2's real tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

# SmolLM2's real pre-tokenizer (digits one by one, then GPT-2's byte-level regex). transformers does
# not know llama.cpp's "smollm" name when it rebuilds the tokenizer from the GGUF and falls back to
# plain byte-level splitting, so the fixture puts the real one back (as the Hub checkpoint has it).
SMOLLM_PRE = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}
QWEN2_PRE = {
    "type": "Sequence",
    "pretokenizers": [
        {
            "type": "Split",
            "pattern": {
                "Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            },
            "behavior": "Isolated",
            "invert": False,
        },
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ],
}
LLAMA3_PRE = json.loads(json.dumps(QWEN2_PRE).replace(r"\\p{N}|", r"\\p{N}{1,3}|"))
# Code, several scripts, digits, emoji, odd whitespace and a special token.
MIXED_TEXT = (
    "def área(r: float) -> float:\n    return 3.14159 * r ** 2  # 12345 and 1000000\n"
    "日本語のテキスト, Привет мир, مرحبا, Ελληνικά 😀👍🏽 <|im_start|>user\n\tTabs\t\tand   spaces\r\n\r\n"
    "I'M HERE, they'll've x1y2z3 0xFF_FF"
)

# The round trip's prompts: prose, code, digits and a chat turn.
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "1 + 1 =",
    "Once upon a time",
    "import numpy as np\n",
    "The three primary colours are",
    "SELECT name FROM users WHERE",
    "Water boils at",
    "class Stack:\n    def __init__(self):",
    "My favourite book is",
    "To make a cup of tea, first",
    "The square root of 144 is",
    "for i in range(10):",
    "In 1969, the first",
    "A haiku about autumn:\n",
    "git commit -m",
    "The opposite of hot is",
    "<|im_start|>user\nWhat is 7 times 8?<|im_end|>\n<|im_start|>assistant\n",
    "function add(a, b) {",
    "Paris, London and",
]


def set_pre_tokenizer(checkpoint: Path, pre: dict[str, Any]) -> None:
    path = checkpoint / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = pre
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def embedded_as_checkpoint(gguf_path: Path, dest: Path) -> Path:
    """The embedded GGUF through transformers (dequantized to f32) saved as a plain checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # ../shared/FACTS.md: the model comes back marked GGUF-quantized and refuses to save until cleared.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    set_pre_tokenizer(dest, SMOLLM_PRE)
    return dest


def copy_tokenizer(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)


def tiny_checkpoint(
    arch: str, tokenizer_from: Path, dest: Path, seed: int = 0, bf16: bool = False, **overrides: Any
) -> Path:
    """A tiny random model of `arch` (2 blocks) with a real tokenizer, saved by transformers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    settings: dict[str, Any] = {
        "vocab_size": 49152,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": arch != "qwen2",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if arch == "qwen3":
        settings["head_dim"] = 32  # qwen3 decouples head_dim from hidden / heads
    settings |= overrides
    config = AutoConfig.for_model(arch, **settings)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random init's tiny weights give flat logits; widen them so argmax means something
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.08)
    if bf16:
        model = model.to(torch.bfloat16)
    model.save_pretrained(dest)
    copy_tokenizer(tokenizer_from, dest)
    return dest


def logits_hf(checkpoint: Path, sequences: list[list[int]]) -> list[np.ndarray[Any, Any]]:
    """transformers' float32 logits for every position of each sequence."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].numpy() for ids in sequences]


def logits_llama(gguf_path: Path, sequences: list[list[int]], lora: Path | None = None) -> list[np.ndarray[Any, Any]]:
    """llama.cpp's logits for every position of each sequence."""
    import llama_cpp

    kwargs: dict[str, Any] = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=512, n_threads=2, logits_all=True, verbose=False, **kwargs)
    try:
        out = []
        for ids in sequences:
            llm.reset()
            llm.eval(ids)
            out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
        return out
    finally:
        llm.close()


def greedy_hf(checkpoint: Path, prompts: list[list[int]], n: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for ids in prompts:
            full = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=2)[0].tolist()
            out.append(full[len(ids) :])
    return out


def add_mtp_heads(checkpoint: Path, depth: int = 1, seed: int = 1) -> dict[str, Any]:
    """Append `depth` MTP blocks in DeepSeek-V3's layout (what katpilot train writes); returns them."""
    import torch
    from safetensors.torch import load_file, save_file

    generator = torch.Generator().manual_seed(seed)
    path = checkpoint / "model.safetensors"
    tensors = load_file(path)
    config = json.loads((checkpoint / "config.json").read_text())
    blocks, hidden = config["num_hidden_layers"], config["hidden_size"]
    template = {k.split(f"layers.{blocks - 1}.", 1)[1]: v for k, v in tensors.items() if f"layers.{blocks - 1}." in k}
    dtype = next(iter(template.values())).dtype  # the checkpoint's own precision
    added = {}
    for k in range(depth):
        prefix = f"model.layers.{blocks + k}."
        block = dict(template) | {
            "eh_proj.weight": torch.empty(hidden, 2 * hidden),
            "enorm.weight": torch.empty(hidden),
            "hnorm.weight": torch.empty(hidden),
            "shared_head.norm.weight": torch.empty(hidden),
        }
        for name, value in block.items():
            added[prefix + name] = torch.randn(value.shape, generator=generator).to(dtype)
    tensors |= added
    save_file(tensors, path, metadata={"format": "pt"})
    config["num_nextn_predict_layers"] = depth
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2))
    return added


def autothink_checkpoint(base: Path, dest: Path) -> Path:
    """The base with the AutoThink tags added as the cold-start SFT stage adds them before it trains."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.model_io import add_autothink_tokens

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    add_autothink_tokens(model, tokenizer)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    set_pre_tokenizer(dest, SMOLLM_PRE)
    return dest
