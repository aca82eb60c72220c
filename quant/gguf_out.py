"""Writing a GGUF one row block at a time, under a hidden name until it is complete.

The `gguf` package's GGUFWriter holds every tensor in memory until `close()`. We use it for what
it does well (header, metadata, tensor table, alignment) and stream the data ourselves: each tensor
is a generator of float32 row blocks that are encoded and written as they come, so a 100 GB model
exports in the memory of one block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from quant.errors import QuantError

Q = gguf.GGMLQuantizationType
Progress = Callable[[str, int, int], None]  # (phase, done, total)
Blocks = Callable[[], Iterator[np.ndarray[Any, Any]]]


@dataclass(frozen=True)
class OutTensor:
    """One tensor to write: GGUF name, type, shape (PyTorch order) and its float32 row blocks."""

    name: str
    qtype: Q
    shape: tuple[int, ...]
    blocks: Blocks

    @property
    def nbytes(self) -> int:
        return int(np.prod(gguf.quants.quant_shape_to_byte_shape(self.shape, self.qtype)))


def encode(rows: np.ndarray[Any, Any], qtype: Q) -> bytes:
    """Float32 rows in `qtype`'s bytes (row-wise types only: blocks never straddle rows)."""
    if qtype == Q.F32:
        return rows.astype("<f4", copy=False).tobytes()
    if qtype == Q.F16:
        return rows.astype("<f2").tobytes()
    return bytes(gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), qtype).tobytes())


def hidden_partial(path: Path, tag: str = "partial") -> Path:
    """Where `path` is written until it is complete: hidden, and named after this process."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def write_gguf(
    writer: gguf.GGUFWriter, tensors: list[OutTensor], progress: Progress | None = None, phase: str = "export"
) -> None:
    """Write header, metadata and tensors through `writer` (opened on its path), then fsync and close."""
    for t in tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    fout = writer.fout[0]
    total, done = sum(t.nbytes for t in tensors), 0
    try:
        for t in tensors:
            writer.write_padding(fout, fout.tell())
            written = sum(fout.write(encode(rows, t.qtype)) for rows in t.blocks())
            if written != t.nbytes:  # our arithmetic against gguf's: never a silently corrupt file
                raise QuantError(
                    f"internal error: {t.name} wrote {written} bytes, expected {t.nbytes}", "report this bug"
                )
            writer.write_padding(fout, t.nbytes)
            done += t.nbytes
            if progress is not None:
                progress(phase, done, total)
        fout.flush()
        os.fsync(fout.fileno())
    finally:
        fout.close()
