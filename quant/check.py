"""`katpilot quant check MODEL.gguf --against CKPT`: does a GGUF hold what its checkpoint holds?

Three checks, each a line of the report:
- hyperparameters: the GGUF's architecture keys against config.json;
- tensors: every tensor dequantized (gguf's numpy dequantizers) against the checkpoint's, permuted as
  the export permutes, as a relative RMS error within the tolerance of its type;
- tokenizer: llama.cpp's tokenization of a mixed text (code, scripts, digits, emoji) against the
  Hugging Face tokenizer's, token for token (needs the `tokenizers` package of the train extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from katpilot.engine.llama_compat import llama_log_lines
from katpilot.errors import ModelFileError
from katpilot.gguf_file import read_gguf_header
from quant.architectures import plan_tensors, read_hyper, to_llama_rotary
from quant.checkpoint import open_checkpoint
from quant.errors import QuantError

# Relative RMS error a tensor of each type may show against its source (measured on SmolLM2 with margin).
TOLERANCE = {
    "F32": 1e-6,
    "F16": 1e-3,
    "BF16": 1e-2,
    "Q8_0": 1e-2,
    "Q6_K": 3e-2,
    "Q5_K": 6e-2,
    "Q5_0": 6e-2,
    "Q5_1": 6e-2,
    "Q4_K": 0.12,
    "Q4_0": 0.12,
    "Q4_1": 0.12,
    "Q3_K": 0.25,
    "Q2_K": 0.5,
}
SAMPLE_TEXT = (
    "def área(r: float) -> float:\n    return 3.14159 * r ** 2  # 12345\n"
    "日本語, Привет, مرحبا 😀👍🏽\n\tTabs  and   spaces\r\nI'M HERE, they'll x1y2 0xFF"
)


@dataclass
class CheckReport:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    worst: dict[str, float] = field(default_factory=dict)  # tensor type -> worst relative RMS error

    @property
    def ok(self) -> bool:
        return not self.failures


def check_export(model: Path, checkpoint: Path) -> CheckReport:
    """Compare `model` with `checkpoint`; the report lists what held and what did not."""
    try:
        kind = read_gguf_header(model).metadata.get(gguf.Keys.General.TYPE, "model")
    except ModelFileError as exc:
        raise QuantError(exc.message, exc.fix) from None
    if kind != "model":
        raise QuantError(f"{model} is a {kind} GGUF, not a model", "check the model file the export wrote")
    try:
        reader = gguf.GGUFReader(model)
    except (OSError, ValueError) as exc:
        raise QuantError(f"cannot read {model}: {exc}", "give a GGUF written by katpilot quant export") from None
    ckpt = open_checkpoint(checkpoint)
    hp = read_hyper(ckpt)
    report = CheckReport()
    _check_hyper(
        reader,
        hp.name,
        {
            "block_count": hp.blocks,
            "embedding_length": hp.hidden,
            "feed_forward_length": hp.ff,
            "attention.head_count": hp.heads,
            "attention.head_count_kv": hp.kv_heads,
            "vocab_size": hp.vocab,
        },
        report,
    )
    plans = {p.gguf_name: p for p in plan_tensors(ckpt, hp) if not p.mtp}
    seen = set()
    for tensor in reader.tensors:
        plan = plans.get(tensor.name)
        if plan is None:
            if tensor.name != "rope_freqs.weight":
                report.failures.append(f"{tensor.name}: not a tensor of the checkpoint")
            continue
        seen.add(tensor.name)
        source = ckpt.tensors[plan.source].read()
        if plan.permute_heads:
            source = to_llama_rotary(source, hp.head_dim)
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if values.size != source.size:
            report.failures.append(f"{tensor.name}: {values.size} values, the checkpoint's tensor has {source.size}")
            continue
        values = values.reshape(source.shape)
        error = float(np.sqrt(np.mean((values - source) ** 2)) / max(np.sqrt(np.mean(source**2)), 1e-12))
        kind = tensor.tensor_type.name
        report.worst[kind] = max(report.worst.get(kind, 0.0), error)
        if error > TOLERANCE.get(kind, 0.5):
            report.failures.append(f"{tensor.name} ({kind}): relative error {error:.3g} > {TOLERANCE.get(kind, 0.5):g}")
    missing = sorted(set(plans) - seen)
    if missing:
        report.failures.append(f"missing tensors: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    worst = ", ".join(f"{k} {v:.2g}" for k, v in sorted(report.worst.items()))
    report.lines.append(f"tensors: {len(seen)}/{len(plans)} present; worst relative error by type: {worst}")
    _check_tokenizer(model, checkpoint, report)
    return report


def _check_hyper(reader: gguf.GGUFReader, arch: str, expected: dict[str, int], report: CheckReport) -> None:
    field_ = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    found = str(field_.contents()) if field_ is not None else None
    if found != arch:
        report.failures.append(f"architecture: the file says {found}, the checkpoint {arch}")
        return
    wrong = []
    for key, value in expected.items():
        got = reader.get_field(f"{arch}.{key}")
        if got is None or int(got.contents()) != value:
            wrong.append(f"{key} {got.contents() if got is not None else 'absent'} (checkpoint: {value})")
    if wrong:
        report.failures.append("hyperparameters: " + "; ".join(wrong))
    else:
        report.lines.append(f"hyperparameters: {arch}, {len(expected)} keys match config.json")


def _check_tokenizer(model: Path, checkpoint: Path, report: CheckReport) -> None:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        report.lines.append("tokenizer: not compared (needs the tokenizers package: pip install 'katpilot[train]')")
        return
    import llama_cpp

    try:
        hf = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    except Exception as exc:  # the tokenizers package raises its own plain Exception for a missing or bad file
        raise QuantError(
            f"cannot read {checkpoint / 'tokenizer.json'} ({str(exc).splitlines()[0][:160]})",
            "give --against the checkpoint directory the GGUF was exported from",
        ) from None
    expected: list[Any] = hf.encode(SAMPLE_TEXT, add_special_tokens=False).ids
    try:
        with llama_log_lines(lambda line: None):  # a vocab-only load still logs its (empty) context
            llm = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    except ValueError:
        report.failures.append("tokenizer: llama.cpp cannot load the file's vocabulary")
        return
    try:
        got = llm.tokenize(SAMPLE_TEXT.encode(), add_bos=False, special=True)
    finally:
        llm.close()
    if got == expected:
        report.lines.append(f"tokenizer: llama.cpp and Hugging Face agree on all {len(got)} tokens of the sample")
        return
    at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
    report.failures.append(f"tokenizer: llama.cpp and Hugging Face differ from token {at} of the sample")
