"""`katpilot quant export`: a Hugging Face checkpoint (full, or base + LoRA) to a GGUF llama.cpp loads.

Our own converter on the `gguf` package (metadata, tensor names, simple quantization) and our
torch-free checkpoint reader; llama.cpp's conversion script is not on PyPI. How it runs:
- everything is checked before a byte is written: architecture, every tensor's presence and shape
  against the config, the tokenizer and its pre-tokenizer, the adapter's factors;
- tensors stream one row block at a time (read, merge the LoRA, permute, convert, write), so memory
  stays bounded by the block size, not the model;
- f32 / f16 / bf16 / q8_0 are written directly; every other type (the K-quants) is written first in
  the checkpoint's own precision (lossless) and then quantized by llama.cpp (`quant.quantize`);
- the result is written under a hidden name and renamed when complete: an interrupted or failed
  export never leaves a file that looks finished;
- MTP heads go to a companion file `NAME.mtp.gguf` (stock llama.cpp refuses llama/qwen files with
  tensors it does not expect) in the layout llama.cpp uses for architectures with MTP, in the
  checkpoint's own precision so they reload bit-exact; the main file names it under
  `katpilot.mtp.companion` (llama.cpp ignores unknown keys).
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from katpilot.gguf_file import MTP_COMPANION_KEY, MTP_HEADS_KEY
from quant.architectures import (
    Hyper,
    TensorPlan,
    add_hyperparameters,
    llama3_rope_factors,
    plan_tensors,
    read_hyper,
    to_llama_rotary,
)
from quant.checkpoint import Checkpoint, open_checkpoint
from quant.errors import QuantError
from quant.gguf_out import OutTensor, Progress, Writer, check_replaceable, hidden_partial, write_gguf
from quant.lora import Adapter, check_adapter, open_adapter
from quant.quantize import TYPES, quantize
from quant.vocab import VocabSummary, add_tokenizer

Q = gguf.GGMLQuantizationType
# Types this module writes itself; the rest of quantize.TYPES go through llama.cpp's quantizer.
WRITTEN: dict[str, tuple[Q, gguf.LlamaFileType]] = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
_SOURCE = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16, "F64": Q.F32}
BASE_KEY = "katpilot.mtp.base"  # in the companion: the main file it belongs to


@dataclass
class ExportReport:
    output: Path
    type: str
    architecture: str
    tensors: int
    output_bytes: int
    seconds: float
    pre_tokenizer: str
    control_tokens: list[str]
    companion: Path | None = None
    mtp_heads: int = 0
    merged_lora: Path | None = None
    imatrix_entries: int = 0  # tensors llama.cpp quantized with the importance matrix
    fallbacks: dict[str, str] = field(default_factory=dict)  # tensor -> the type it got instead
    notices: list[str] = field(default_factory=list)


def companion_path(output: Path) -> Path:
    """Where the MTP heads of `output` go: MODEL.gguf -> MODEL.mtp.gguf."""
    return output.with_name(f"{output.stem}.mtp.gguf")


def export_checkpoint(
    checkpoint: Path,
    output: Path,
    type_name: str = "f16",
    *,
    lora: Path | None = None,
    imatrix: Mapping[str, np.ndarray[Any, Any]] | Callable[[], Mapping[str, np.ndarray[Any, Any]] | None] | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    name: str | None = None,
) -> ExportReport:
    """Export `checkpoint` (merged with the adapter at `lora`, if given) to `output` as `type_name`;
    `name` is the model's name in the file (`general.name`, what serving and eval plots show; default
    `model_name`);
    `imatrix` weights llama.cpp's rounding for the types that use one (`quant.imatrix`); given as a
    function, it is called once the checkpoint has passed every check, so a broken checkpoint is
    refused before minutes of calibration."""
    started = time.perf_counter()
    kind = type_name.lower()
    if kind not in TYPES:
        raise QuantError(f"unknown export type {type_name!r}", f"use one of {', '.join(TYPES)}")
    ckpt = open_checkpoint(checkpoint)
    hp = read_hyper(ckpt)
    plans = plan_tensors(ckpt, hp)
    adapter = open_adapter(lora) if lora is not None else None
    if adapter is not None:
        check_adapter(adapter, ckpt)
    check_replaceable(output)
    if not output.parent.is_dir():
        raise QuantError(f"{output.parent} is not a directory", "create it, or give another output path")
    direct = kind if kind in WRITTEN else _lossless(ckpt, plans)
    heads = [p for p in plans if p.mtp]
    companion = companion_path(output) if heads else None
    if companion is not None:
        check_replaceable(companion)
    first = output if kind in WRITTEN else output.with_name(f"{output.stem}.{direct}.gguf")
    main_partial = hidden_partial(first)
    main_writer = Writer(main_partial, hp.name)  # metadata, tokenizer checks included, before any byte is written
    title = name or model_name(checkpoint, output)
    vocab = _main_metadata(main_writer, ckpt, title, hp, direct, companion.name if companion else None)
    matrix = imatrix() if callable(imatrix) else imatrix
    report = ExportReport(output, kind, hp.arch, 0, 0, 0.0, "", [], merged_lora=lora)
    main = _main_tensors(ckpt, hp, plans, WRITTEN[direct][0], adapter, report.fallbacks)
    partials: list[Path] = []
    created: list[Path] = []  # final paths this run renamed into place, removed again if a later step fails
    try:
        if companion is not None:
            partials.append(hidden_partial(companion))
            mtp = [_tensor(ckpt, hp, p, _SOURCE[ckpt.tensors[p.source].dtype], adapter) for p in heads]
            writer = Writer(partials[-1], hp.name)
            _companion_metadata(writer, title, hp, output.name)
            write_gguf(writer, mtp, progress, "mtp heads")
        partials.append(main_partial)
        write_gguf(main_writer, main, progress, "export")
        if kind in WRITTEN:
            os.replace(partials[-1], output)
        else:
            done = quantize(
                partials[-1], output, kind, threads=threads, progress=_tensor_progress(progress), imatrix=matrix
            )
            report.fallbacks |= done.fallbacks
            report.imatrix_entries = done.imatrix_entries
            report.notices += [n for n in done.notices if "fell back" not in n]
        created.append(output)
        if companion is not None:
            os.replace(partials[0], companion)
    except BaseException as exc:
        for path in created:
            path.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        if exc.errno == errno.ENOSPC:
            raise QuantError(f"the disk is full: cannot write {output}", "free disk space or write elsewhere") from None
        raise QuantError(f"cannot write {output} ({exc.strerror or exc})", "give a writable path") from None
    finally:
        for path in partials:
            path.unlink(missing_ok=True)
    report.tensors = len(main)
    report.output_bytes = output.stat().st_size
    report.pre_tokenizer, report.control_tokens = vocab.pre, vocab.control
    report.companion, report.mtp_heads = (companion, hp.mtp_blocks) if companion else (None, 0)
    report.seconds = time.perf_counter() - started
    if report.fallbacks:
        types = sorted(set(report.fallbacks.values()))
        report.notices.append(
            f"{len(report.fallbacks)} tensor(s) fell back to {', '.join(types)}: their rows are not divisible by "
            f"the block size {kind} needs"
        )
    return report


def _lossless(ckpt: Checkpoint, plans: list[TensorPlan]) -> str:
    """The checkpoint's own precision, for the file llama.cpp quantizes from."""
    dtypes = {ckpt.tensors[p.source].dtype for p in plans if len(p.shape) > 1}
    return "bf16" if dtypes == {"BF16"} else "f16" if dtypes == {"F16"} else "f32"


def _main_tensors(
    ckpt: Checkpoint, hp: Hyper, plans: list[TensorPlan], qtype: Q, adapter: Adapter | None, fallbacks: dict[str, str]
) -> list[OutTensor]:
    """The main file's tensors and types: 1-D ones in f32 (as llama.cpp's converter does), rows that
    do not fill the type's blocks in f16."""
    out = []
    factors = llama3_rope_factors(hp)
    if factors is not None:
        out.append(OutTensor("rope_freqs.weight", Q.F32, factors.shape, lambda: iter([factors])))
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for plan in plans:
        if plan.mtp:
            continue
        kind = qtype if len(plan.shape) > 1 else Q.F32
        if kind != Q.F32 and plan.shape[-1] % block:
            kind = Q.F16
            fallbacks[plan.gguf_name] = "f16"
        out.append(_tensor(ckpt, hp, plan, kind, adapter))
    return out


def _tensor(ckpt: Checkpoint, hp: Hyper, plan: TensorPlan, qtype: Q, adapter: Adapter | None) -> OutTensor:
    """A planned tensor's row blocks: read, LoRA merged (W + scale * B @ A), permuted for llama."""
    ref = ckpt.tensors[plan.source]
    pair = adapter.pairs.get(plan.source) if adapter is not None else None
    group = hp.head_dim if plan.permute_heads else 1

    # bf16 written as f16 or bf16 stays in 16 bits all the way (gguf_out.Encoder takes the patterns)
    bits = pair is None and qtype in (Q.F16, Q.BF16)

    def blocks() -> Iterator[np.ndarray[Any, Any]]:
        a = pair.a.read() if pair is not None else None
        b = pair.b.read() * adapter.scale if pair is not None and adapter is not None else None
        for start, stop, rows in ref.blocks(group, bf16_bits=bits):
            if a is not None and b is not None:
                rows = rows + b[start:stop] @ a
            yield to_llama_rotary(rows, hp.head_dim) if plan.permute_heads else rows

    return OutTensor(plan.gguf_name, qtype, plan.shape, blocks)


def model_name(checkpoint: Path, output: Path) -> str:
    """The checkpoint directory's name, as llama.cpp's converter takes it; a training run's `final` or
    `checkpoint-N` says nothing about the model, so the output file's name stands in for those."""
    return output.stem if re.fullmatch(r"final|checkpoint-\d+", checkpoint.name) else checkpoint.name


def _main_metadata(
    writer: gguf.GGUFWriter, ckpt: Checkpoint, name: str, hp: Hyper, direct: str, companion: str | None
) -> VocabSummary:
    writer.add_name(name)
    writer.add_type(gguf.GGUFType.MODEL)
    add_hyperparameters(writer, hp, hp.blocks)
    writer.add_file_type(WRITTEN[direct][1])
    if direct == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    summary = add_tokenizer(writer, ckpt.path, hp.vocab)
    if companion is not None:
        writer.add_string(MTP_COMPANION_KEY, companion)
        writer.add_uint32(MTP_HEADS_KEY, hp.mtp_blocks)
    return summary


def _companion_metadata(writer: gguf.GGUFWriter, name: str, hp: Hyper, main: str) -> None:
    """llama.cpp's MTP layout: block_count includes the MTP blocks, nextn_predict_layers counts them."""
    writer.add_name(name)
    writer.add_type("mtp")
    add_hyperparameters(writer, hp, hp.blocks + hp.mtp_blocks)
    writer.add_nextn_predict_layers(hp.mtp_blocks)
    writer.add_string(BASE_KEY, main)


def _tensor_progress(progress: Progress | None) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress("quantize", done, total)
