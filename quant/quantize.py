"""`katpilot quant quantize`: a GGUF to another type, through llama.cpp's own quantizer.

Why llama.cpp's: the gguf package quantizes only the simple types (Q8_0, Q4_0/1, Q5_0/1, BF16); the
K-quants exist only in llama.cpp (`llama_model_quantize`, reached through llama-cpp-python). What we
add around it:
- the input is validated by katpilot's GGUF reader first, so a corrupt file is one clear line;
- the result is atomic: written to a temporary name in the target directory and renamed when
  complete, so an interrupted or failed run never leaves a file that looks finished;
- llama.cpp logs a line per tensor: it is collected while the quantizer runs
  (`llama_compat.llama_log_lines`), for a progress bar and for the tensors that fell back to
  another type (K-quants need rows divisible by 256; small models such as SmolLM2 have 576);
- an importance matrix (`quant.imatrix`) is checked against the input's tensors first (a wrong
  name or length is one line, not llama.cpp's exception), handed over as llama.cpp's
  `llama_model_imatrix_data` array, and its use confirmed from llama.cpp's log.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from katpilot.engine.llama_compat import llama_log_lines
from quant.errors import QuantError
from quant.gguf_out import check_replaceable, hidden_partial

# Our names -> llama.cpp's llama_ftype constant names (llama_cpp.LLAMA_FTYPE_*).
TYPES: dict[str, str] = {
    "f32": "ALL_F32",
    "f16": "MOSTLY_F16",
    "bf16": "MOSTLY_BF16",
    "q8_0": "MOSTLY_Q8_0",
    "q6_k": "MOSTLY_Q6_K",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_1": "MOSTLY_Q5_1",
    "q5_0": "MOSTLY_Q5_0",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_1": "MOSTLY_Q4_1",
    "q4_0": "MOSTLY_Q4_0",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q2_k": "MOSTLY_Q2_K",
}
_PROGRESS = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")
_FALLBACK = re.compile(r"warning: (\S+)\s.*?falling back to\s+(\S+)")
_UNQUANTIZED = ("F32", "F16", "BF16")
_IMATRIX_TAKEN = re.compile(r"have importance matrix data with (\d+) entries")
_IMATRIX_MISSING = re.compile(r"did not find weights for (\S+)")
# Types whose quantization ignores an importance matrix (ggml's q8_0 rounds each value to nearest).
_IMATRIX_IGNORED = ("f32", "f16", "bf16", "q8_0")


@dataclass
class QuantizeReport:
    output: Path
    type: str
    input_bytes: int
    output_bytes: int
    seconds: float
    fallbacks: dict[str, str] = field(default_factory=dict)  # tensor -> the type it got instead
    notices: list[str] = field(default_factory=list)
    imatrix_entries: int = 0  # entries llama.cpp said it took (0: quantized without a matrix)
    imatrix_missing: list[str] = field(default_factory=list)  # quantized tensors the matrix had no entry for


def quantize(
    source: Path,
    output: Path,
    type_name: str,
    *,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    imatrix: Mapping[str, np.ndarray[Any, Any]] | None = None,
) -> QuantizeReport:
    """Quantize `source` to `type_name` at `output` (atomically), weighting rounding errors by
    `imatrix` (GGUF tensor name -> mean squared activation per input column) when given."""
    from katpilot.gguf_file import read_gguf

    kind = type_name.lower()
    if kind not in TYPES:
        raise QuantError(f"unknown quantization type {type_name!r}", f"use one of {', '.join(TYPES)}")
    summary = read_gguf(source)  # a corrupt or truncated input is one line here, not a C crash
    if output.resolve() == source.resolve():
        raise QuantError(f"{output} is the input file", "give another output path")
    check_replaceable(output)
    if not output.parent.is_dir():
        raise QuantError(f"{output.parent} is not a directory", "create it, or give another output path")
    notices = []
    if summary.file_type.upper() not in _UNQUANTIZED:
        notices.append(
            f"{source.name} is already {summary.file_type}: requantizing keeps what that lost; "
            "quantize an f16 or f32 export for the best quality"
        )
    if imatrix is not None:
        from quant.imatrix import check_imatrix

        check_imatrix(source, imatrix)
        if kind in _IMATRIX_IGNORED:
            notices.append(f"{kind} does not use an importance matrix: the result is the same without one")
    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{TYPES[kind]}")
    params.allow_requantize = True
    params.nthread = threads or 0  # 0: llama.cpp's own choice (the hardware threads)
    entries = _imatrix_entries(llama_cpp, imatrix) if imatrix is not None else None
    if entries is not None:
        params.imatrix = ctypes.cast(entries[0], ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    partial = hidden_partial(output)
    started = time.perf_counter()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        found = _PROGRESS.search(line)
        if found and progress is not None:
            progress(int(found.group(1)), int(found.group(2)))

    try:
        with llama_log_lines(on_line):
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if status != 0 or not partial.is_file():
            last = next((ln for ln in reversed(lines) if ln.strip()), "no message")
            raise QuantError(f"llama.cpp could not quantize {source.name} to {kind}: {last.strip()}", "see the message")
        if imatrix is not None and not any(_IMATRIX_TAKEN.search(ln) for ln in lines):
            raise QuantError("llama.cpp did not take the importance matrix", "use llama-cpp-python 0.3.20 or newer")
        os.replace(partial, output)
    except OSError as exc:
        raise QuantError(f"cannot write {output} ({exc.strerror})", "free disk space or give a writable path") from None
    finally:
        partial.unlink(missing_ok=True)
    fallbacks = {m.group(1): m.group(2) for ln in lines if (m := _FALLBACK.search(ln))}
    if fallbacks:
        types = sorted(set(fallbacks.values()))
        notices.append(
            f"{len(fallbacks)} tensor(s) fell back to {', '.join(types)}: their rows are not divisible by 256, "
            f"which {kind} needs"
        )
    report = QuantizeReport(
        output, kind, source.stat().st_size, output.stat().st_size, time.perf_counter() - started, fallbacks, notices
    )
    if imatrix is not None:
        report.imatrix_entries = max(int(m.group(1)) for ln in lines if (m := _IMATRIX_TAKEN.search(ln)))
        report.imatrix_missing = sorted({m.group(1) for ln in lines if (m := _IMATRIX_MISSING.search(ln))})
        if report.imatrix_missing:
            notices.append(
                f"{len(report.imatrix_missing)} tensor(s) had no importance-matrix entry and were quantized without "
                f"one: {', '.join(report.imatrix_missing[:3])}{', ...' if len(report.imatrix_missing) > 3 else ''}"
            )
    return report


def _imatrix_entries(llama_cpp: Any, imatrix: Mapping[str, np.ndarray[Any, Any]]) -> tuple[Any, list[Any]]:
    """llama.cpp's array of {name, data, size} ended by a NULL name, and the buffers it points into
    (kept referenced by the caller until the quantizer returns)."""
    entry = llama_cpp.llama_model_imatrix_data
    array = (entry * (len(imatrix) + 1))()
    buffers: list[Any] = []
    for i, (name, values) in enumerate(imatrix.items()):
        data = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        encoded = name.encode()
        buffers += [data, encoded]
        array[i].name = encoded
        array[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        array[i].size = data.size
    array[len(imatrix)].name = None
    return array, buffers
