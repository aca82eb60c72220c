"""Importance matrices: which input columns of each weight matter, measured on your own text.

llama.cpp's quantizer puts its rounding error where it hurts least when it knows, per weight
tensor, the mean square of each input column over real text (an "importance matrix"; llama.cpp's
`llama-imatrix` tool measures it by running the model). We measure it in transformers, on the
checkpoint before it is exported: a forward pre-hook on every `nn.Linear` adds up x² per input
column and counts the rows. The calibration text is the repository as `RepoIndex` serves it, so a
line the index withholds as a possible secret never reaches the model.

Names are GGUF tensor names, taken from the export's own plan (`quant.architectures.plan_tensors`),
so they are exactly what `katpilot quant export` writes. With tied embeddings the output projection
multiplies by `token_embd.weight`, and llama.cpp's tool files those activations under that name, so
we do too. The llama export permutes q/k *output rows* for llama.cpp's rotary layout; the matrix
describes *input columns*, whose order no export changes.

File format (`save_imatrix` / `load_imatrix`): llama.cpp's own imatrix GGUF, so
`llama-quantize --imatrix` reads ours and we read its: `general.type = "imatrix"`,
`imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`, and per weight `NAME.in_sum2`
(f32, the sums of squares, [matrices x columns]) and `NAME.counts` (f32, rows seen per matrix).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from numpy.typing import NDArray

from katpilot.errors import ModelFileError
from katpilot.gguf_file import read_gguf_header
from quant.checkpoint import quiet_about_mtp_heads
from quant.errors import QuantError

DEFAULT_TOKENS = 16_384  # 32 chunks of 512: two to eight minutes for a 135M model on two busy cores
DEFAULT_CHARS = 4 * DEFAULT_TOKENS  # calibration text read from a repository: code runs ~3.6 characters a token
_TRAIN_FIX = "pip install 'katpilot[train]'"


class Imatrix(dict[str, NDArray[np.float32]]):
    """GGUF tensor name -> mean squared activation per input column, and what it was measured on."""

    def __init__(
        self,
        values: dict[str, NDArray[np.float32]] | None = None,
        *,
        tokens: int = 0,
        chunks: int = 0,
        chunk_size: int = 0,
        datasets: Sequence[str] = (),
    ) -> None:
        super().__init__(values or {})
        self.tokens, self.chunks, self.chunk_size, self.datasets = tokens, chunks, chunk_size, list(datasets)


def calibration_texts(repo: Path, limit_chars: int = DEFAULT_CHARS) -> list[str]:
    """The repository's source files as the index reads them (secrets withheld), `limit_chars` in all.

    Every file gets a fair share of the budget (short files whole, the rest cut to what is left),
    so the matrix sees the whole repository, not the files that sort first.
    """
    from katpilot.index.repo import RepoIndex

    with RepoIndex(repo) as index:
        index.refresh()
        texts = [doc.text for doc in index.documents() if doc.text.strip()]
    shares = _fair_shares([len(t) for t in texts], max(0, limit_chars))
    return [text[:share] for text, share in zip(texts, shares, strict=True) if share > 0]


def _fair_shares(sizes: list[int], limit: int) -> list[int]:
    """Split `limit` over items of `sizes`: the smallest first, each at most its size or an equal part of the rest."""
    shares = [0] * len(sizes)
    left = limit
    order = sorted(range(len(sizes)), key=sizes.__getitem__)
    for rank, i in enumerate(order):
        shares[i] = min(sizes[i], left // (len(order) - rank))
        left -= shares[i]
    return shares


def compute_imatrix(
    checkpoint: Path,
    texts: Iterable[str],
    *,
    max_tokens: int = DEFAULT_TOKENS,
    chunk: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> Imatrix:
    """Run `texts` (up to `max_tokens` tokens, `chunk` at a time) through the checkpoint and return
    the mean square of every linear layer's input columns, keyed by GGUF tensor name."""
    if max_tokens < 1 or chunk < 2:
        raise QuantError(f"cannot calibrate on {max_tokens} token(s) in chunks of {chunk}", "give more tokens")
    targets = _gguf_names(checkpoint)
    torch, transformers = _train_stack()
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    chunks = _chunks(tokenizer, texts, max_tokens, chunk)
    if not chunks:
        raise QuantError("the calibration text is empty", "calibrate on a repository with source files in it")
    with quiet_about_mtp_heads(checkpoint):  # the heads are not calibrated: they never reach the quantizer
        model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.eval()
    sums: dict[str, Any] = {}  # GGUF name -> float64 tensor of column sums of squares
    rows: dict[str, int] = {}

    def collect(name: str, x: Any) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        sums[name] = sums[name] + (x * x).sum(0) if name in sums else (x * x).sum(0)
        rows[name] = rows.get(name, 0) + x.shape[0]

    head = model.get_output_embeddings()
    handles = [
        module.register_forward_pre_hook(lambda _m, args, name=targets[name]: collect(name, args[0]))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name in targets and module is not head
    ]
    head_name = next(targets[n] for n, m in model.named_modules() if m is head)
    total, done = sum(len(c) for c in chunks), 0
    try:
        with torch.inference_mode():
            for ids in chunks:
                # The output projection's input is the base model's last hidden state: collected
                # directly, the logits (a fifth of the work for a small model) are never computed.
                collect(head_name, model.base_model(torch.tensor([ids])).last_hidden_state)
                done += len(ids)
                if progress is not None:
                    progress(done, total)
    finally:
        for handle in handles:
            handle.remove()
    values = {name: (sums[name].numpy() / rows[name]).astype(np.float32) for name in sorted(sums)}
    return Imatrix(values, tokens=total, chunks=len(chunks), chunk_size=chunk)


def _gguf_names(checkpoint: Path) -> dict[str, str]:
    """Linear module name -> the GGUF tensor its weight becomes, from the export's plan."""
    from quant.architectures import plan_tensors, read_hyper
    from quant.checkpoint import open_checkpoint

    ckpt = open_checkpoint(checkpoint)
    hp = read_hyper(ckpt)
    plans = [p for p in plan_tensors(ckpt, hp) if not p.mtp and p.source.endswith(".weight")]
    names = {p.source.removesuffix(".weight"): p.gguf_name for p in plans}
    if hp.tied:
        names["lm_head"] = names["model.embed_tokens"]  # llama.cpp multiplies the output by token_embd
    return names


def _train_stack() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise QuantError("computing an importance matrix needs the train extra", _TRAIN_FIX) from None
    return torch, transformers


def _chunks(tokenizer: Any, texts: Iterable[str], max_tokens: int, chunk: int) -> list[list[int]]:
    """The texts as one token stream (documents ended by EOS) cut into chunks of `chunk` tokens,
    `max_tokens` in all; each chunk starts with BOS when the tokenizer adds one, as llama.cpp's tool does."""
    bos = tokenizer.bos_token_id
    head = [bos] if bos is not None and tokenizer("x")["input_ids"][:1] == [bos] else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for text in texts:
        if len(stream) >= max_tokens:
            break
        stream += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + eos
    chunks: list[list[int]] = []
    used, body = 0, chunk - len(head)
    for start in range(0, len(stream), body):
        piece = (head + stream[start : start + body])[: max_tokens - used]
        if len(piece) < 2:
            break
        chunks.append(piece)
        used += len(piece)
    return chunks


def check_imatrix(model: Path, matrix: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """Every entry names a weight matrix of `model` and holds one finite, non-negative value per
    input column: llama.cpp throws on a wrong length and silently ignores an unknown name."""
    fix = "compute the importance matrix from this model's own checkpoint"
    if not matrix:
        raise QuantError("the importance matrix is empty", fix)
    columns = weight_columns(model)
    for name, values in matrix.items():
        if name not in columns:
            raise QuantError(f"importance matrix entry {name!r} names no weight matrix of {model.name}", fix)
        if np.size(values) != columns[name]:
            raise QuantError(
                f"importance matrix entry {name!r} has {np.size(values)} values; the tensor has {columns[name]} columns",
                fix,
            )
        if not np.all(np.isfinite(values)) or np.any(np.asarray(values) < 0):
            raise QuantError(f"importance matrix entry {name!r} holds negative or non-finite values", fix)


def weight_columns(model: Path) -> dict[str, int]:
    """Each weight matrix of a GGUF -> the values its importance-matrix entry needs (ne[0], times
    ne[2] for stacked expert matrices, as llama.cpp counts). The header alone is read: gguf's
    GGUFReader also maps every vocabulary entry, seconds for a 49k-token vocabulary."""
    shapes = read_gguf_header(model).shapes
    return {name: shape[0] * (shape[2] if len(shape) > 2 else 1) for name, shape in shapes.items() if len(shape) > 1}


def save_imatrix(path: Path, matrix: Imatrix, architecture: str = "llama") -> None:
    """Write `matrix` as llama.cpp's imatrix GGUF (atomically: a hidden name, renamed when complete)."""
    if not path.parent.is_dir():
        raise QuantError(f"{path.parent} is not a directory", "create it, or give another path")
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    count = float(max(matrix.tokens, 1))
    try:
        writer = gguf.GGUFWriter(partial, architecture)
        writer.add_type(gguf.GGUFType.IMATRIX)
        writer.add_array(gguf.Keys.IMatrix.DATASETS, matrix.datasets or ["katpilot"])
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, matrix.chunks)
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, matrix.chunk_size)
        for name, values in sorted(matrix.items()):
            writer.add_tensor(f"{name}.in_sum2", (values.astype(np.float64) * count).astype(np.float32)[None, :])
            writer.add_tensor(f"{name}.counts", np.array([[count]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    except OSError as exc:
        raise QuantError(f"cannot write {path} ({exc.strerror or exc})", "give a writable path") from None
    finally:
        partial.unlink(missing_ok=True)


def load_imatrix(path: Path) -> Imatrix:
    """Read an imatrix GGUF (ours or llama-imatrix's); anything else is one line."""
    fix = "give a file written by katpilot or llama-imatrix"
    try:
        kind = read_gguf_header(path).metadata.get("general.type")  # a model is refused before it is mapped
    except ModelFileError as exc:
        raise QuantError(exc.message, fix) from None
    if kind != gguf.GGUFType.IMATRIX:
        raise QuantError(f"{path} is not an importance matrix (general.type is {kind!r})", fix)
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise QuantError(f"{path} is not a GGUF file ({exc})", fix) from None
    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    chunks, size = _field(reader, gguf.Keys.IMatrix.CHUNK_COUNT) or 0, _field(reader, gguf.Keys.IMatrix.CHUNK_SIZE) or 0
    datasets = _field(reader, gguf.Keys.IMatrix.DATASETS) or []
    if not isinstance(chunks, int) or not isinstance(size, int) or not isinstance(datasets, list):
        raise QuantError(f"{path}: its chunk count, chunk size or datasets have the wrong type", fix)
    matrix = Imatrix(chunks=chunks, chunk_size=size, datasets=[str(d) for d in datasets])
    for key, sums in tensors.items():
        if not key.endswith(".in_sum2"):
            continue
        name = key.removesuffix(".in_sum2")
        counts = tensors.get(f"{name}.counts")
        if counts is None or counts.size != sums.reshape(-1, sums.shape[-1]).shape[0] or np.any(counts < 0):
            raise QuantError(f"{path}: {name} has no row counts to go with its sums", fix)
        if not (np.all(np.isfinite(counts)) and np.all(np.isfinite(sums))):
            raise QuantError(f"{path}: {name} holds values that are not finite numbers", fix)
        seen = counts.reshape(-1, 1)
        # A matrix no calibration row reached (an unused expert) weighs every column alike, as llama.cpp does.
        means = np.where(seen > 0, sums.reshape(counts.size, -1) / np.maximum(seen, 1), 1.0)
        matrix[name] = means.reshape(-1).astype(np.float32)
        matrix.tokens = max(matrix.tokens, int(counts.max()))
    if not matrix:
        raise QuantError(f"{path} holds no importance data", fix)
    return matrix


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    found = reader.get_field(key)
    return found.contents() if found is not None else None


# Types llama.cpp quantizes without looking at an importance matrix.
IGNORES_IMATRIX = frozenset({"f32", "f16", "bf16", "q8_0"})


def imatrix_for_export(
    spec: str,
    checkpoint: Path,
    type_name: str,
    calibration: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Imatrix | None, str | None]:
    """`--imatrix auto|FILE|none` -> (the matrix or None, a notice when auto had to do without).

    auto computes one from `calibration` (a repository, through the index) when the type uses it
    and the train extra is installed; otherwise the export goes on without, and says why."""
    if spec == "none" or type_name in IGNORES_IMATRIX:
        return None, None
    if spec != "auto":
        return load_imatrix(Path(spec)), None
    try:
        _train_stack()
    except QuantError:
        return None, f"no importance matrix: computing one needs the train extra ({_TRAIN_FIX}); or give --imatrix FILE"
    texts = calibration_texts(calibration)
    if not texts:
        return None, f"no importance matrix: {calibration} has no source files to calibrate on (give --calibration DIR)"
    return compute_imatrix(checkpoint, texts, progress=progress), None
