"""Writing a GGUF one row block at a time, under a hidden name until it is complete.

The `gguf` package's GGUFWriter holds every tensor in memory until `close()`. We use it for what
it does well (header, metadata, tensor table, alignment) and stream the data ourselves: each tensor
is a generator of float32 row blocks that are encoded and written as they come, so a 100 GB model
exports in the memory of one block.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from quant.errors import QuantError
from quant.halfbits import bf16_to_f16_bits

Q = gguf.GGMLQuantizationType
Progress = Callable[[str, int, int], None]  # (phase, done, total)
Blocks = Callable[[], Iterator[np.ndarray[Any, Any]]]


class Writer(gguf.GGUFWriter):
    """GGUFWriter whose long metadata arrays (a vocabulary: ~50k tokens, ~50k merges, their types)
    are packed in one join instead of one struct call per item: 0.7 s less per export of SmolLM2,
    the same bytes (tests/test_quant_export.py compares them with GGUFWriter's)."""

    def _pack_val(
        self, val: Any, vtype: gguf.GGUFValueType, add_vtype: bool, sub_type: gguf.GGUFValueType | None = None
    ) -> bytes:
        fast = vtype == gguf.GGUFValueType.ARRAY and self.endianess == gguf.GGUFEndian.LITTLE
        if not (fast and isinstance(val, list) and len(val) >= 256):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack("<I", vtype) if add_vtype else b""
        if sub_type in (None, gguf.GGUFValueType.STRING) and all(type(v) is str for v in val):
            items = [v.encode("utf-8") for v in val]
            body = b"".join(len(e).to_bytes(8, "little") + e for e in items)
            return head + struct.pack("<IQ", gguf.GGUFValueType.STRING, len(val)) + body
        ints = {None: "<i4", gguf.GGUFValueType.INT32: "<i4", gguf.GGUFValueType.UINT32: "<u4"}
        if sub_type in ints and all(isinstance(v, int) and not isinstance(v, bool) for v in val):
            kind = sub_type or gguf.GGUFValueType.INT32
            return head + struct.pack("<IQ", kind, len(val)) + np.asarray(val, ints[sub_type]).tobytes()
        return super()._pack_val(val, vtype, add_vtype, sub_type)


@dataclass(frozen=True)
class OutTensor:
    """One tensor to write: GGUF name, type, shape (PyTorch order) and its row blocks: float32, or a
    bf16 tensor's raw uint16 patterns when it is written as f16 or bf16."""

    name: str
    qtype: Q
    shape: tuple[int, ...]
    blocks: Blocks

    @property
    def nbytes(self) -> int:
        return int(np.prod(gguf.quants.quant_shape_to_byte_shape(self.shape, self.qtype)))


class Encoder:
    """Float32 rows to a type's bytes, into a scratch buffer reused from block to block (row-wise
    types only: their blocks never straddle rows)."""

    def __init__(self) -> None:
        self._scratch = np.empty(0, dtype="<f2")

    def __call__(self, rows: np.ndarray[Any, Any], qtype: Q) -> memoryview | bytes:
        if rows.dtype == np.uint16:  # bf16 patterns (TensorRef.blocks(bf16_bits=True))
            return self._from_bf16(rows, qtype)
        if qtype == Q.F32:
            return np.ascontiguousarray(rows, dtype="<f4").data.cast("B")
        if qtype == Q.F16:
            if self._scratch.size < rows.size:
                self._scratch = np.empty(rows.size, dtype="<f2")
            half = self._scratch[: rows.size].reshape(rows.shape)
            np.copyto(half, rows, casting="same_kind")
            return half.data.cast("B")
        return bytes(gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), qtype).tobytes())

    def _from_bf16(self, bits: np.ndarray[Any, Any], qtype: Q) -> memoryview | bytes:
        if qtype == Q.BF16:  # unchanged
            return np.ascontiguousarray(bits, dtype="<u2").data.cast("B")
        if qtype != Q.F16:
            raise QuantError(f"internal error: bf16 patterns for {qtype.name}", "report this bug")
        if self._scratch.size < bits.size:
            self._scratch = np.empty(bits.size, dtype="<f2")
        half = self._scratch[: bits.size].view(np.uint16)
        bf16_to_f16_bits(np.ascontiguousarray(bits).reshape(-1), out=half)
        return half.data.cast("B")


def check_replaceable(path: Path) -> None:
    """Refuse an output path that would lose a file which is not a GGUF (a checkpoint's own
    model.safetensors, a user's notes): a GGUF there is an earlier output and may be replaced."""
    if not path.name or path.name in (".", ".."):
        raise QuantError(f"the output path {str(path)!r} names no file", "give a file name, e.g. model.gguf")
    if path.is_dir():
        raise QuantError(f"{path} is a directory", "give a file name inside it, e.g. model.gguf")
    if not path.exists():
        return
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise QuantError(f"cannot read {path} ({exc.strerror or exc})", "give another output path") from None
    if magic != b"GGUF":
        raise QuantError(
            f"{path} exists and is not a GGUF file: katpilot does not replace it",
            "give another output path, or remove that file first",
        )


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
    encode = Encoder()
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
