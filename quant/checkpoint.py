"""A Hugging Face checkpoint directory, read without torch: config, safetensors tensors, LoRA adapter.

Written by hand rather than with `safetensors`' numpy API for two reasons: numpy has no bfloat16
(most checkpoints are bf16), and safetensors maps the whole file, so every page an export touches
stays in its resident memory. Here a tensor is read in row blocks with `os.pread`, converted to
float32 block by block, and nothing else of the file is held: an export's memory is bounded by its
block size, not by the model.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quant.errors import QuantError

_DTYPES: dict[str, tuple[str, int]] = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "F64": ("<f8", 8)}
_MAX_HEADER = 100 * 2**20
MTP_HEADS_FILE = "mtp.safetensors"  # where `katpilot train` saves distillation's heads (trainer.mtp)
BLOCK_BYTES = 32 * 2**20  # float32 bytes per row block: an export's working set is a few of these


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a safetensors file: where its bytes are and how to read them."""

    name: str
    file: Path
    dtype: str  # safetensors' name: F32, F16, BF16, F64
    shape: tuple[int, ...]
    offset: int  # absolute, in bytes
    nbytes: int

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_elements(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1

    def blocks(
        self, group: int = 1, budget: int = BLOCK_BYTES, bf16_bits: bool = False
    ) -> Iterator[tuple[int, int, np.ndarray[Any, Any]]]:
        """(start, stop, rows as float32) blocks of whole `group`s of rows, read into buffers that
        are reused: each block is overwritten by the next, so use it (or copy it) before asking for
        more. Reusing them saves a fresh allocation, and its page faults, per block.

        `bf16_bits`: a BF16 tensor's rows come as their raw uint16 patterns, not widened (the export
        writes them as bf16 unchanged, or rebases them to f16 in 16-bit arithmetic)."""
        code, size = _DTYPES[self.dtype]
        raw_bits = bf16_bits and self.dtype == "BF16"
        per_row = self.row_elements
        spans = list(row_blocks(self.rows, per_row * 4, group, budget))
        most = max((stop - start) * per_row for start, stop in spans) if spans else 0
        raw = np.empty(most, dtype=code)
        wide = raw if self.dtype == "F32" or raw_bits else np.empty(most, dtype=np.float32)
        with open(self.file, "rb") as handle:
            for start, stop in spans:
                count = (stop - start) * per_row
                target = raw[:count].data.cast("B")
                if os.preadv(handle.fileno(), [target], self.offset + start * per_row * size) != count * size:
                    raise QuantError(
                        f"{self.file} ends inside tensor {self.name}", "the file is truncated: copy it again"
                    )
                if raw_bits:
                    pass
                elif self.dtype == "BF16":  # bf16 is the top half of a float32
                    bits = wide[:count].view(np.uint32)
                    np.copyto(bits, raw[:count])
                    np.left_shift(bits, 16, out=bits)
                elif self.dtype != "F32":
                    np.copyto(wide[:count], raw[:count], casting="unsafe")
                shape = (stop - start, *self.shape[1:]) if len(self.shape) > 1 else (stop - start,)
                yield start, stop, wide[:count].reshape(shape)

    def read(self) -> np.ndarray[Any, Any]:
        """The whole tensor as float32 (small ones: norms, LoRA factors; `quant check`, one at a time)."""
        whole = np.empty(self.shape or (1,), dtype=np.float32)
        for start, stop, rows in self.blocks():
            whole[start:stop] = rows
        return whole if self.shape else whole.reshape(())

    def _read_exact(self, fd: int, target: memoryview, offset: int) -> None:
        """Fill `target` from `offset`: a read may return less (Linux: at most ~2 GiB a call)."""
        done = 0
        while done < len(target):
            got = os.preadv(fd, [target[done:]], offset + done)
            if got <= 0:
                raise QuantError(f"{self.file} ends inside tensor {self.name}", "the file is truncated: copy it again")
            done += got


def read_safetensors_header(path: Path) -> dict[str, TensorRef]:
    """The tensors of one .safetensors file; a damaged header is one clear error."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise QuantError(f"{path} is not a safetensors file (too short)", "copy the checkpoint again")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER:
                raise QuantError(f"{path} is not a safetensors file (header length {length})", "copy it again")
            header = json.loads(handle.read(length))
            size = os.fstat(handle.fileno()).st_size
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QuantError(f"cannot read {path}: {exc}", "check the checkpoint's files") from None
    if not isinstance(header, dict):
        raise QuantError(f"{path} has a damaged header", "copy the checkpoint again")
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = str(info["dtype"]), tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise QuantError(f"{path}: tensor {name} has a damaged entry", "copy the checkpoint again") from None
        if dtype not in _DTYPES:
            raise QuantError(f"{path}: tensor {name} is {dtype}", "export float checkpoints (F32, F16, BF16)")
        if end - begin != math.prod(shape) * _DTYPES[dtype][1] or base + end > size:
            raise QuantError(f"{path}: tensor {name} does not fit its file", "the file is truncated: copy it again")
        tensors[name] = TensorRef(name, path, dtype, shape, base + begin, end - begin)
    return tensors


@dataclass
class Checkpoint:
    """A checkpoint directory: its config.json and every tensor of its safetensors files."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorRef]

    @property
    def architecture(self) -> str:
        return str(self.config.get("model_type", "?"))

    def get(self, key: str, *fallbacks: str, default: Any = None) -> Any:
        for name in (key, *fallbacks):
            if self.config.get(name) is not None:
                return self.config[name]
        return default


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuantError(f"{path} is missing", f"is {path.parent} a Hugging Face checkpoint directory?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QuantError(f"cannot read {path}: {exc}", "check the file") from None
    if not isinstance(data, dict):
        raise QuantError(f"{path} is not a JSON object", "check the file")
    return data


def safetensors_files(directory: Path, stem: str) -> list[Path]:
    """`stem`.safetensors, or the shards its index names; bin-only checkpoints are refused."""
    single = directory / f"{stem}.safetensors"
    index = directory / f"{stem}.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = load_json(index).get("weight_map", {})
        if not isinstance(weight_map, dict) or not all(
            isinstance(n, str) and "/" not in n for n in weight_map.values()
        ):
            raise QuantError(
                f"{index}: weight_map is not an object of tensor names to file names in {directory}",
                "save the checkpoint again with save_pretrained",
            )
        return sorted({directory / name for name in weight_map.values()})
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise QuantError(
            f"{directory} holds PyTorch pickles, not safetensors",
            "save it again with save_pretrained(..., safe_serialization=True)",
        )
    raise QuantError(f"no {stem}.safetensors in {directory}", "give a Hugging Face checkpoint directory")


def open_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint's config and tensor table (no tensor data yet)."""
    if not path.is_dir():
        raise QuantError(
            f"{path} is not a directory", "give a Hugging Face checkpoint directory (config.json, *.safetensors)"
        )
    config = load_json(path / "config.json")
    tensors: dict[str, TensorRef] = {}
    for file in safetensors_files(path, "model"):
        if not file.is_file():
            raise QuantError(f"{file} is missing (named by the shard index)", "copy the whole checkpoint")
        tensors.update(read_safetensors_header(file))
    return Checkpoint(path, config, tensors)


def row_blocks(rows: int, row_bytes: int, group: int = 1, budget: int = BLOCK_BYTES) -> Iterator[tuple[int, int]]:
    """[start, stop) blocks of about `budget` bytes (float32), each a multiple of `group` rows."""
    per_block = max(group, (budget // max(row_bytes, 1)) // group * group)
    for start in range(0, rows, per_block):
        yield start, min(rows, start + per_block)


@contextmanager
def quiet_about_mtp_heads(checkpoint: Path) -> Iterator[None]:
    """Distillation's MTP heads sit in the checkpoint's weight index (where the export finds them), and
    transformers' loader prints a table listing each of their tensors as UNEXPECTED; they load
    separately (`trainer.mtp.load_mtp_heads`), so that table only buries the progress lines."""
    import logging

    if not (checkpoint / MTP_HEADS_FILE).is_file():
        yield
        return
    loader = logging.getLogger("transformers.modeling_utils")
    level = loader.level
    loader.setLevel(logging.ERROR)
    try:
        yield
    finally:
        loader.setLevel(level)
