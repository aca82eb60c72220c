"""Validate a GGUF model file before llama.cpp sees it, and summarise it for `katpilot models info`.

llama.cpp answers a bad file with native log lines, a NULL model or, for some malformed headers, an
abort. So every model path goes through `read_gguf` first, which turns each problem into one
`ModelFileError` naming the file and saying what to do.

`gguf.GGUFReader` would do the parsing but takes ~1.7 s on a 100 MB model (it builds numpy views for
every vocabulary entry), against 0.1 s for llama.cpp to load that model. This module walks the header
itself with `struct` over a memory map, keeps only what it needs and skips the rest by size, in a few
milliseconds. Type codes, block sizes, key names and the architecture list come from the `gguf`
package, so parser and converter agree on them; a test cross-checks this parser against GGUFReader.

The checks follow llama.cpp's loader (ggml/src/gguf.cpp): magic, version 2 or 3, no duplicate keys or
tensor names, no nested arrays, at most 4 dimensions, known tensor types, rows a multiple of the
block size, tensors back to back at `general.alignment`, and all tensor data inside the file.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import stat
import struct
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import gguf

from katpilot.errors import ModelFileError
from katpilot.gate import KAT_TAGS

_T = TypeVar("_T")

# Fill-in-the-middle token triples (prefix, suffix, middle) of the common code-model families, for
# GGUFs written before the tokenizer.ggml.fim_*_token_id keys existed.
FIM_TRIPLES: tuple[tuple[str, str, str], ...] = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, Qwen3
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, DeepSeek-V2 Lite family
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("<PRE>", "<SUF>", "<MID>"),  # CodeLlama
)

_VT = gguf.GGUFValueType
_KEYS = gguf.Keys
_MAGIC = struct.pack("<I", gguf.GGUF_MAGIC)  # b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NAME = 64  # GGML_MAX_NAME: llama.cpp rejects tensor names of this many bytes or more
_INT64_MAX = 2**63 - 1
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, dimension count, type, offset

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# How each GGUF scalar type is stored. Little-endian only: big-endian files are refused up front.
_SCALARS: dict[int, struct.Struct] = {
    _VT.UINT8: struct.Struct("<B"),
    _VT.INT8: struct.Struct("<b"),
    _VT.UINT16: struct.Struct("<H"),
    _VT.INT16: struct.Struct("<h"),
    _VT.UINT32: _U32,
    _VT.INT32: struct.Struct("<i"),
    _VT.FLOAT32: struct.Struct("<f"),
    _VT.BOOL: struct.Struct("<?"),
    _VT.UINT64: _U64,
    _VT.INT64: struct.Struct("<q"),
    _VT.FLOAT64: struct.Struct("<d"),
}

_FIX_RECOPY = "download or copy the file again"
_FIX_CONVERT = "convert the model to GGUF with llama.cpp's convert_hf_to_gguf.py, or download a .gguf build"
_FIX_OTHER_FILE = "point katpilot at the model's own .gguf file"


@dataclass(frozen=True)
class GGUFSummary:
    """What katpilot needs to know about a validated model file, without touching tensor data."""

    path: Path
    file_size: int
    version: int
    architecture: str  # general.architecture
    name: str | None  # general.name
    parameter_count: int  # sum of tensor element counts
    file_type: str  # e.g. "Q4_1", "Q4_K_M"
    context_length: int | None  # <arch>.context_length
    block_count: int | None
    embedding_length: int | None
    chat_template: str | None  # tokenizer.chat_template
    tokenizer_model: str | None  # tokenizer.ggml.model
    bos_token: str | None  # text of token tokenizer.ggml.bos_token_id
    eos_token: str | None
    add_bos_token: bool | None  # tokenizer.ggml.add_bos_token
    tags_in_vocab: frozenset[str]  # AutoThink tags (gate.KAT_TAGS) that are single tokens in the vocabulary
    fim_tokens: tuple[str, str, str] | None  # fill-in-the-middle (prefix, suffix, middle) tokens
    mtp_heads: int  # multi-token-prediction heads, 0 if none
    mtp_companion: str | None  # the file holding them, when not this one (`katpilot quant export`)
    metadata: dict[str, object]  # scalar and string metadata; arrays as "[TYPE x n]"
    tensor_count: int = 0

    @property
    def autothink_tags(self) -> frozenset[str]:
        """AutoThink tags the model knows: single tokens of its vocabulary, or written in its template.

        A template can name a tag that the tokenizer splits into pieces; both say the model was
        made for the format, which is what `models info` reports.
        """
        template = self.chat_template or ""
        return self.tags_in_vocab | {tag for tag in KAT_TAGS if tag in template}

    def companion_status(self) -> str | None:
        """Where this model's MTP heads are, when a companion file holds them, and whether it is there."""
        if self.mtp_companion is None:
            return None
        found = (self.path.parent / self.mtp_companion).is_file()
        return f"{self.mtp_companion} ({'present' if found else 'missing: export the checkpoint again'})"

    def model_info(self, profile: str) -> dict[str, object]:
        """The fields `katpilot models info` shows (its `--json` shape), in display order.

        `profile` is the family the profile rules detect (`profiles.detect_profile`); it is passed
        in so that this module, which validates files, does not depend on those rules.
        """
        return {
            "path": str(self.path),
            "name": self.name,
            "architecture": self.architecture,
            "parameters": self.parameter_count,
            "quantization": self.file_type,
            "file_size": self.file_size,
            "context_length": self.context_length,
            "profile": profile,
            "autothink_tags": sorted(self.autothink_tags),
            "mtp_heads": self.mtp_heads,
            "mtp_companion": self.companion_status(),
            "chat_template": self.chat_template,
        }


SAMPLES = 16  # blocks read by `content_digest`, evenly spaced through the file
SAMPLE_BYTES = 64 * 1024


def content_digest(path: Path) -> str:
    """A cheap identity of a model file's contents: its size and 16 blocks of 64 KiB spread over it.

    Why: a journal keyed on a path alone would resume into a model re-exported to the same path
    (another model's answers mixed into one report), and hashing a multi-GB file whole costs seconds.
    It catches a different model, a different quantization or a retrained export; a change confined
    to a few tensors of an otherwise equal file (a LoRA on a few modules) can fall between the samples."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        for i in range(SAMPLES):
            f.seek(max(0, size - SAMPLE_BYTES) * i // max(1, SAMPLES - 1))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def format_model_info(info: Mapping[str, object]) -> str:
    """`model_info` for people: one aligned `key value` line each, sizes in M and MiB, then the
    chat template indented (it is long and multi-line, so it comes last)."""
    lines = []
    for key, value in info.items():
        if key == "chat_template" or (key == "mtp_companion" and value is None):
            continue
        if key == "parameters" and isinstance(value, (int, float)):
            value = f"{value / 1e6:.1f}M"
        elif key == "file_size" and isinstance(value, (int, float)):
            value = f"{value / 2**20:.1f} MiB"
        elif key == "autothink_tags" and isinstance(value, list):
            value = " ".join(value) or "none"
        lines.append(f"{key:<16} {value}")
    template = info.get("chat_template")
    if isinstance(template, str) and template:
        lines += ["chat_template:", "  " + template.replace("\n", "\n  ")]
    else:
        lines.append("chat_template    none")
    return "\n".join(lines)


# --- internal failures; read_gguf turns each into a ModelFileError ---------------------------------


class _Truncated(Exception):
    """The file ends before byte `needed` (`exact`: that is the full size, not a lower bound)."""

    def __init__(self, needed: int, exact: bool = False) -> None:
        super().__init__(needed)
        self.needed = needed
        self.exact = exact


class _Corrupt(Exception):
    """The file holds a value no valid GGUF holds; the argument says which."""


class _Absurd(_Corrupt):
    """A length or count read from the file claims more bytes than the whole file holds: corruption,
    or a file cut so short that the two cannot be told apart. Either way, never allocate or loop on it."""


class _Unsupported(Exception):
    """A well-formed GGUF that katpilot cannot run as a model."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


# --- walking the header ----------------------------------------------------------------------------


class _Cursor:
    """A read position in the mapped file. Every read is bounds-checked, so garbage lengths can
    neither allocate, loop for ages, nor index past the end."""

    __slots__ = ("buf", "pos", "size")

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def take(self, n: int) -> int:
        """Claim the next n bytes; return where they start."""
        start = self.pos
        if start + n > self.size:
            raise _Truncated(start + n)
        self.pos = start + n
        return start

    def take_claimed(self, n: int, what: str) -> int:
        """Like take, for a length read from the file: one longer than the whole file is _Absurd."""
        if n > self.size:
            raise _Absurd(f"{what} claims {n} bytes, more than the whole file")
        return self.take(n)

    def unpack(self, fmt: struct.Struct) -> object:
        return fmt.unpack_from(self.buf, self.take(fmt.size))[0]

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.buf, self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack_from(self.buf, self.take(8))[0]
        return value

    def raw_string(self, what: str) -> bytes:
        n = self.u64()
        start = self.take_claimed(n, what)
        return self.buf[start : start + n]

    def name(self, what: str) -> str:
        """A string that must be UTF-8: a key or a tensor name."""
        try:
            return self.raw_string(what).decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} is not valid UTF-8") from None


def _walk_strings(cur: _Cursor, count: int, keep: bool, what: str) -> list[bytes]:
    """Step over `count` length-prefixed strings, collecting them if `keep`. The hot loop (two
    vocabulary-sized arrays per model), so it works on locals rather than _Cursor methods."""
    if count * 8 > cur.size:
        raise _Absurd(f"{what} claims {count} strings, more than the whole file can hold")
    buf, size, pos = cur.buf, cur.size, cur.pos
    unpack = _U64.unpack_from
    items: list[bytes] = []
    append = items.append
    for _ in range(count):
        if pos + 8 > size:
            raise _Truncated(pos + 8)
        (n,) = unpack(buf, pos)
        pos += 8
        if pos + n > size:
            if n > size:
                raise _Absurd(f"a string in {what} claims {n} bytes, more than the whole file")
            raise _Truncated(pos + n)
        if keep:
            append(buf[pos : pos + n])
        pos += n
    cur.pos = pos
    return items


class _Metadata:
    """The key/value pairs with their GGUF value types, so get_str never returns an array summary
    and get_int never returns a bool or a float."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.types: dict[str, int] = {}
        self.vocab: list[bytes] = []  # tokenizer.ggml.tokens, the one array whose items we keep

    def get_int(self, key: str) -> int | None:
        value = self.values.get(key)
        return value if self.types.get(key) in _INT_TYPES and isinstance(value, int) else None

    def get_str(self, key: str) -> str | None:
        value = self.values.get(key)
        return value if self.types.get(key) == _VT.STRING and isinstance(value, str) else None

    def get_bool(self, key: str) -> bool | None:
        value = self.values.get(key)
        return value if self.types.get(key) == _VT.BOOL and isinstance(value, bool) else None


_INT_TYPES = frozenset({_VT.UINT8, _VT.INT8, _VT.UINT16, _VT.INT16, _VT.UINT32, _VT.INT32, _VT.UINT64, _VT.INT64})


def _read_array(cur: _Cursor, key: str, keep_strings: bool) -> tuple[str, list[bytes]]:
    """Skip (or, for strings, optionally collect) an array value; returns its "[TYPE x n]" summary."""
    item_type = cur.u32()
    count = cur.u64()
    what = f"the array {key!r}"
    items: list[bytes] = []
    if item_type == _VT.STRING:
        items = _walk_strings(cur, count, keep_strings, what)
    elif item_type in _SCALARS:
        cur.take_claimed(count * _SCALARS[item_type].size, what)
    elif item_type == _VT.ARRAY:
        raise _Corrupt(f"{what} is an array of arrays, which llama.cpp does not accept")
    else:
        raise _Corrupt(f"{what} has unknown item type {item_type}")
    return f"[{_VT(item_type).name} x {count}]", items


def _read_metadata(cur: _Cursor, kv_count: int) -> _Metadata:
    """All key/value pairs in file order, arrays summarised, plus the vocabulary as raw bytes."""
    meta = _Metadata()
    for _ in range(kv_count):
        key = cur.name("a metadata key")
        if key in meta.values:
            raise _Corrupt(f"metadata key {key!r} appears twice")
        vtype = cur.u32()
        if vtype == _VT.STRING:
            # Values are decoded leniently: llama.cpp does not check their UTF-8 either.
            value: object = cur.raw_string(f"the value of {key!r}").decode("utf-8", errors="replace")
        elif vtype in _SCALARS:
            value = cur.unpack(_SCALARS[vtype])
        elif vtype == _VT.ARRAY:
            is_vocab = key == _KEYS.Tokenizer.LIST
            value, items = _read_array(cur, key, keep_strings=is_vocab)
            if is_vocab:
                meta.vocab = items
        else:
            raise _Corrupt(f"metadata key {key!r} has unknown value type {vtype}")
        meta.values[key] = value
        meta.types[key] = vtype
    return meta


class _Tensor(NamedTuple):
    name: str
    type_name: str  # GGMLQuantizationType name, e.g. "Q4_1"
    n_elements: int
    n_bytes: int
    offset: int  # from the start of the data section
    shape: tuple[int, ...]  # ggml order: ne[0], a row's length, first


def _read_tensor_info(cur: _Cursor) -> _Tensor:
    """One tensor's name, shape, type and data offset, checked as llama.cpp checks them."""
    name = cur.name("a tensor name")
    if len(name.encode()) >= _MAX_NAME:
        raise _Corrupt(f"tensor name {name[:40]!r}... is longer than llama.cpp allows")
    n_dims = cur.u32()
    if n_dims > _MAX_DIMS:
        raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions (at most {_MAX_DIMS})")
    dims = [cur.u64() for _ in range(n_dims)]
    if any(d > _INT64_MAX for d in dims):
        raise _Corrupt(f"tensor {name!r} has a negative dimension")
    code = cur.u32()
    try:
        qtype = gguf.GGMLQuantizationType(code)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise _Corrupt(f"tensor {name!r} has unknown type code {code}") from None
    if dims and dims[0] % block_size:
        raise _Corrupt(f"tensor {name!r} has rows of {dims[0]} values, not a multiple of {qtype.name}'s {block_size}")
    n_elements = 1
    for d in dims:
        n_elements *= d
    offset = cur.u64()
    return _Tensor(name, qtype.name, n_elements, n_elements // block_size * type_size, offset, tuple(dims))


def _read_tensor_infos(cur: _Cursor, count: int) -> list[_Tensor]:
    tensors = [_read_tensor_info(cur) for _ in range(count)]
    counts = Counter(t.name for t in tensors)
    if len(counts) != len(tensors):
        duplicate = next(name for name, n in counts.items() if n > 1)
        raise _Corrupt(f"tensor {duplicate!r} appears twice")
    return tensors


def _alignment(meta: _Metadata) -> int:
    """general.alignment: llama.cpp reads it as a UINT32 without checking the type (and aborts if it
    is another), so check it here."""
    key = _KEYS.General.ALIGNMENT
    if key not in meta.values:
        return gguf.GGUF_DEFAULT_ALIGNMENT
    value = meta.values[key]
    if meta.types[key] != _VT.UINT32 or not isinstance(value, int) or not value or value & (value - 1):
        raise _Corrupt(f"{key} is {value!r}, not a power of two stored as UINT32")
    return value


def _round_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _data_section_length(tensors: list[_Tensor], alignment: int) -> int:
    """Tensors must sit back to back, each padded to `alignment` (llama.cpp insists). Returns the
    data section's length up to the end of the last tensor."""
    expected = end = 0
    for t in tensors:
        if t.offset != expected:
            raise _Corrupt(f"tensor {t.name!r} has data offset {t.offset}, expected {expected}")
        end = t.offset + t.n_bytes
        expected = _round_up(end, alignment)
    return end


_NEWEST_PLAUSIBLE_VERSION = 255  # GGUF went from 1 to 3 in two years: a far larger number is a damaged header


def _check_version(version: int) -> None:
    if version & 0xFFFF == 0 and version:
        raise _Unsupported("is a big-endian GGUF file", "download the usual little-endian build of the model")
    if version not in _SUPPORTED_VERSIONS:
        if version < min(_SUPPORTED_VERSIONS):
            fix = "convert the model again with a current llama.cpp (GGUF version 1 is no longer supported)"
        elif version <= _NEWEST_PLAUSIBLE_VERSION:
            fix = "upgrade katpilot, or use a file written by an older converter"
        else:  # no converter writes such a version: the header itself is damaged
            fix = "the file is damaged: download or export it again"
        raise _Unsupported(f"is GGUF version {version}; katpilot reads versions 2 and 3", fix)


class _Parsed(NamedTuple):
    version: int
    meta: _Metadata
    tensors: list[_Tensor]
    expected_size: int  # where the last tensor's data ends


def _parse(buf: mmap.mmap, size: int) -> _Parsed:
    """Walk version, counts, metadata and tensor infos (the magic is already checked)."""
    cur = _Cursor(buf, size)
    cur.take(len(_MAGIC))
    version = cur.u32()
    _check_version(version)
    tensor_count = cur.u64()
    kv_count = cur.u64()
    if kv_count * _MIN_KV_BYTES > size or tensor_count * _MIN_TENSOR_INFO_BYTES > size:
        raise _Absurd(f"the header claims {tensor_count} tensors and {kv_count} metadata keys")
    meta = _read_metadata(cur, kv_count)
    tensors = _read_tensor_infos(cur, tensor_count)
    alignment = _alignment(meta)
    data_start = _round_up(cur.pos, alignment)
    return _Parsed(version, meta, tensors, data_start + _data_section_length(tensors, alignment))


# --- interpretation --------------------------------------------------------------------------------


def _file_type(meta: _Metadata, tensors: list[_Tensor]) -> str:
    """general.file_type by its llama.cpp name ("Q4_K_M"); else the tensor type holding most weights."""
    value = meta.get_int(_KEYS.General.FILE_TYPE)
    if value is not None:
        try:
            name = gguf.LlamaFileType(value & ~gguf.LlamaFileType.GUESSED).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    weights: Counter[str] = Counter()
    for t in tensors:
        weights[t.type_name] += t.n_elements
    return weights.most_common(1)[0][0]


def _token_text(vocab: list[bytes], token_id: int | None) -> str | None:
    if token_id is None or not 0 <= token_id < len(vocab):
        return None
    return vocab[token_id].decode("utf-8", errors="replace")


def _fim_tokens(meta: _Metadata, vocab: set[bytes]) -> tuple[str, str, str] | None:
    """The model's fill-in-the-middle tokens: from the tokenizer's FIM ids, else a known triple."""
    tok = _KEYS.Tokenizer
    pre, suf, mid = (
        _token_text(meta.vocab, meta.get_int(key)) for key in (tok.FIM_PRE_ID, tok.FIM_SUF_ID, tok.FIM_MID_ID)
    )
    if pre and suf and mid:
        return pre, suf, mid
    return next((t for t in FIM_TRIPLES if all(x.encode() in vocab for x in t)), None)


_FIRST_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


# Written by `katpilot quant export` into a main file whose MTP heads are in a companion GGUF
# (llama.cpp refuses llama/qwen files with tensors it does not expect, and ignores unknown keys).
MTP_COMPANION_KEY, MTP_HEADS_KEY = "katpilot.mtp.companion", "katpilot.mtp.heads"


def _mtp_heads(meta: _Metadata, arch: str, tensors: list[_Tensor]) -> int:
    """The companion's head count, <arch>.nextn_predict_layers, or the blocks holding nextn/mtp tensors."""
    declared = meta.get_int(MTP_HEADS_KEY) if meta.get_str(MTP_COMPANION_KEY) else None
    declared = declared if declared is not None else meta.get_int(_KEYS.LLM.NEXTN_PREDICT_LAYERS.format(arch=arch))
    if declared is not None:
        return declared
    blocks = set()
    for t in tensors:
        if "nextn" in t.name or "mtp" in t.name:
            match = _FIRST_INDEX.search(t.name)
            blocks.add(match.group(1) if match else t.name)
    return len(blocks)


def _check_is_model(meta: _Metadata, tensors: list[_Tensor]) -> str:
    """The file must be a model (not an adapter, projector or part 2 of a split) of an architecture
    the gguf package knows. Returns the architecture."""
    kinds = {
        "adapter": "a LoRA adapter",
        "mmproj": "a multimodal projector",
        "imatrix": "an importance matrix",
        "mtp": "the MTP heads companion of a model",
    }
    kind = meta.get_str(_KEYS.General.TYPE)
    if kind in kinds:
        raise _Unsupported(f"is {kinds[kind]}, not a model", _FIX_OTHER_FILE)
    arch = meta.get_str(_KEYS.General.ARCHITECTURE)
    if arch is None:
        split_no = meta.get_int(_KEYS.Split.LLM_KV_SPLIT_NO)
        if split_no:
            count = meta.get_int(_KEYS.Split.LLM_KV_SPLIT_COUNT)
            raise _Unsupported(f"is part {split_no + 1} of {count} of a split model", "point katpilot at part 00001")
        raise _Unsupported("has no general.architecture metadata", _FIX_CONVERT)
    if arch not in gguf.MODEL_ARCH_NAMES.values():
        raise _Unsupported(
            f"has unsupported architecture {arch[:60]!r}",
            "use a model of an architecture llama.cpp runs (e.g. llama, qwen2, qwen3), or upgrade katpilot",
        )
    if arch == "clip":  # projectors written before general.type existed
        raise _Unsupported("is a multimodal projector, not a model", _FIX_OTHER_FILE)
    if not tensors:
        raise _Unsupported("contains no tensors (a vocabulary-only file)", "use a complete model file")
    return arch


def _summarise(path: Path, size: int, parsed: _Parsed) -> GGUFSummary:
    meta, tensors = parsed.meta, parsed.tensors
    arch = _check_is_model(meta, tensors)
    tok, llm = _KEYS.Tokenizer, _KEYS.LLM
    vocab = set(meta.vocab)
    return GGUFSummary(
        path=path,
        file_size=size,
        version=parsed.version,
        architecture=arch,
        name=meta.get_str(_KEYS.General.NAME),
        parameter_count=sum(t.n_elements for t in tensors),
        file_type=_file_type(meta, tensors),
        context_length=meta.get_int(llm.CONTEXT_LENGTH.format(arch=arch)),
        block_count=meta.get_int(llm.BLOCK_COUNT.format(arch=arch)),
        embedding_length=meta.get_int(llm.EMBEDDING_LENGTH.format(arch=arch)),
        chat_template=meta.get_str(tok.CHAT_TEMPLATE),
        tokenizer_model=meta.get_str(tok.MODEL),
        bos_token=_token_text(meta.vocab, meta.get_int(tok.BOS_ID)),
        eos_token=_token_text(meta.vocab, meta.get_int(tok.EOS_ID)),
        add_bos_token=meta.get_bool(tok.ADD_BOS),
        tags_in_vocab=frozenset(tag for tag in KAT_TAGS if tag.encode() in vocab),
        fim_tokens=_fim_tokens(meta, vocab),
        mtp_heads=_mtp_heads(meta, arch, tensors),
        mtp_companion=meta.get_str(MTP_COMPANION_KEY),
        metadata=meta.values,
        tensor_count=len(tensors),
    )


# --- files that are not GGUF -----------------------------------------------------------------------


def _looks_like_text(head: bytes) -> bool:
    return b"\x00" not in head and all(b >= 0x20 or b in b"\t\n\r\x0c" for b in head)


def _describe_non_gguf(head: bytes) -> tuple[str, str]:
    """Say what the file is instead of GGUF, so the fix can be specific."""
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer", "run `git lfs pull` in that repository, or download the file itself"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page", "download the file itself (on Hugging Face the /resolve/ link, not /blob/)"
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg"):
        return "it is a pre-GGUF GGML/GGJT model", _FIX_CONVERT
    if len(head) >= 9 and head[8:9] == b"{":
        return "it is a safetensors file", _FIX_CONVERT
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "it looks like a PyTorch checkpoint", _FIX_CONVERT
    if _looks_like_text(head):
        return "it is a text file", _FIX_CONVERT
    return f"it starts with bytes {head[:4].hex(' ')}", _FIX_CONVERT


# --- the entry points ------------------------------------------------------------------------------


def _open(path: Path) -> tuple[int, int]:
    """Open for reading; returns (fd, size). Each way the path itself can be wrong gets its own message."""
    if path.is_symlink() and not path.exists():
        raise ModelFileError(f"model file {path} is a broken symbolic link", "download the model again")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.gguf"))[:3]
        fix = f"point to one of the .gguf files in it: {', '.join(found)}" if found else "point to a .gguf file"
        raise ModelFileError(f"model path {path} is a directory, not a GGUF file", fix)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist", "check the path") from None
    except PermissionError:
        raise ModelFileError(
            f"model file {path} is not readable (permission denied)",
            f"make it readable (chmod a+r {path}) or run katpilot as its owner",
        ) from None
    except OSError as exc:
        raise ModelFileError(f"cannot open model file {path}: {exc.strerror}", "check the path") from None
    size_or_none = _regular_file_size(fd)
    if size_or_none is None:
        os.close(fd)
        raise ModelFileError(f"model path {path} is not a regular file", "point to a .gguf file")
    return fd, size_or_none


def _regular_file_size(fd: int) -> int | None:
    st = os.fstat(fd)
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _parse_file(path: Path, fd: int, size: int) -> _Parsed:
    """Map the file, check the magic, parse, check the data fits."""
    if size == 0:
        raise ModelFileError(f"model file {path} is empty (0 bytes)", _FIX_RECOPY)
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
        head = buf[:64]
        if head[: len(_MAGIC)] != _MAGIC:
            if size < len(_MAGIC) and _MAGIC.startswith(head):
                raise _Truncated(len(_MAGIC))
            what, fix = _describe_non_gguf(head)
            raise ModelFileError(f"{path} is not a GGUF file ({what})", fix)
        parsed = _parse(buf, size)
    if size < parsed.expected_size:
        raise _Truncated(parsed.expected_size, exact=True)
    return parsed


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF's metadata and tensor shapes, checked as `read_gguf` checks them, of any kind of GGUF
    (a model, an adapter, an importance matrix): what `quant` needs without interpreting a model."""

    metadata: dict[str, object]  # scalars and strings; arrays as "[TYPE x n]"
    shapes: dict[str, tuple[int, ...]]  # ggml order: ne[0], a row's length, first


def read_gguf(path: str | Path) -> GGUFSummary:
    """Parse and validate; raise ModelFileError with a one-line message on any problem."""
    path = Path(path).expanduser()
    return _read(path, lambda parsed, size: _summarise(path, size, parsed))


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse and validate the header of any GGUF; one-line ModelFileError on any problem."""
    return _read(
        Path(path).expanduser(),
        lambda parsed, size: GGUFHeader(dict(parsed.meta.values), {t.name: t.shape for t in parsed.tensors}),
    )


def _read(path: Path, interpret: Callable[[_Parsed, int], _T]) -> _T:
    fd, size = _open(path)
    try:
        return interpret(_parse_file(path, fd, size), size)
    except _Truncated as exc:
        bound = "" if exc.exact else "at least "
        raise ModelFileError(f"{path} is truncated ({size} of {bound}{exc.needed} bytes)", _FIX_RECOPY) from None
    except _Absurd as exc:
        raise ModelFileError(f"{path} is corrupt or truncated: {exc}", _FIX_RECOPY) from None
    except _Corrupt as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}", _FIX_RECOPY) from None
    except _Unsupported as exc:
        raise ModelFileError(f"{path} {exc.what}", exc.fix) from None
    except (OSError, ValueError, OverflowError, MemoryError, struct.error) as exc:
        # Safety net: the walk above checks bounds itself, so reaching this is a bug or an I/O error.
        raise ModelFileError(f"cannot read model file {path}: {exc}", _FIX_RECOPY) from None
    finally:
        os.close(fd)


def require_chat_template(summary: GGUFSummary) -> None:
    """ModelFileError if the file has no chat template: katpilot formats every conversation with it."""
    if not summary.chat_template:
        raise ModelFileError(
            f"{summary.path} has no chat template (tokenizer.chat_template)",
            "use an instruct/chat model that ships one",
        )
