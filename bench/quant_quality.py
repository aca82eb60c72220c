"""The quantization quality table: perplexity and KL divergence per type, with and without an importance matrix.

    python bench/quant_quality.py [--checkpoint DIR] [--tokens 3072] [--calibration-tokens 16384] [--out table.md]

The embedded SmolLM2-135M goes through transformers to a Hugging Face checkpoint (as the export tests
build it), or `--checkpoint` names one (a fine-tuned model, e.g. `katpilot train sft`'s `final/`), is exported to f32 and f16 by `katpilot quant export`'s code, and the f32 file is quantized
to each type by llama.cpp, once plain and once with an importance matrix computed from this
repository's `katpilot/` package (`quant.imatrix.calibration_texts`: secrets withheld).

Held-out text, disjoint from the calibration text: the first `--tokens` tokens of the running
interpreter's own standard library sources `textwrap.py`, `heapq.py` and `fractions.py` (offline,
code with prose docstrings like the calibration text, and no part of this repository). Each file is
scored by llama.cpp (`logits_all`) in independent windows of 512 tokens, every token after the
first of its window predicted: perplexity, and the mean KL divergence of each file's next-token
distribution from the f16 file's at the same positions.

Targets (issue 16): q8_0 within 0.5% of f16's perplexity, q4_k_m within 5%; with the importance
matrix no worse than without. q8_0 rounds to nearest and ignores the matrix (its two files are
identical).

Read the table knowing that the embedded model ships as Q4_1: its "f32" weights are dequantized
Q4_1 values, already on Q4_1's grid of 32-value blocks. A type that re-rounds onto another grid
(q5_0, q5_1: the fallbacks of q4_k_m and q5_k_m for SmolLM2's 576-wide rows) pays for both
roundings, so q5_k_m can come out no better than q4_k_m here, and requantizing to q4_1 itself is
nearly lossless. Fine distinctions between types need a model that was never quantized.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as `python bench/quant_quality.py`, bench/ comes first on sys.path and its quant.py would hide the
# quant package; tests/ has quant_helpers (the embedded model as a checkpoint).
sys.path[:] = [str(ROOT / "tests")] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from katpilot.models import embedded_model_path  # noqa: E402
from quant.export import export_checkpoint  # noqa: E402
from quant.imatrix import calibration_texts, compute_imatrix  # noqa: E402
from quant.quantize import quantize  # noqa: E402

HELD_OUT = ("textwrap.py", "heapq.py", "fractions.py")
TYPES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m")
WINDOW = 512


@dataclass
class Row:
    type: str
    imatrix: str  # "yes", "no", or "—" for the unquantized references
    mib: float
    ppl: float
    kl: float


def held_out_text() -> str:
    lib = Path(sysconfig.get_paths()["stdlib"])
    return "\n\n".join((lib / name).read_text(encoding="utf-8") for name in HELD_OUT)


def windows(model: Path, text: str, tokens: int) -> list[list[int]]:
    import llama_cpp

    vocab = llama_cpp.Llama(str(model), n_ctx=WINDOW, verbose=False)  # vocab_only warns of a context of 0
    try:
        ids = vocab.tokenize(text.encode(), add_bos=False, special=False)[:tokens]
    finally:
        vocab.close()
    if len(ids) < tokens:
        raise SystemExit(f"the held-out text has only {len(ids)} tokens; ask for fewer with --tokens")
    return [ids[i : i + WINDOW] for i in range(0, len(ids), WINDOW) if len(ids[i : i + WINDOW]) > 1]


def log_probs(model: Path, chunks: list[list[int]], threads: int) -> Iterator[np.ndarray[Any, Any]]:
    """Per window, llama.cpp's next-token log-probabilities at every position but the last."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=WINDOW, n_batch=WINDOW, n_threads=threads, logits_all=True, verbose=False)
    try:
        for ids in chunks:
            llm.reset()
            llm.eval(ids)
            logits = np.array(llm.scores[: len(ids) - 1], dtype=np.float64)
            top = logits.max(axis=1, keepdims=True)
            yield logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    finally:
        llm.close()


def score(
    model: Path, chunks: list[list[int]], reference: list[np.ndarray[Any, Any]] | None, threads: int
) -> tuple[float, float, list[np.ndarray[Any, Any]]]:
    """Perplexity, mean KL from `reference` (0 without one), and the log-probs when `reference` is None (to keep)."""
    nll, kl, count, kept = 0.0, 0.0, 0, []
    for i, lp in enumerate(log_probs(model, chunks, threads)):
        targets = np.array(chunks[i][1:])
        nll -= float(lp[np.arange(len(targets)), targets].sum())
        count += len(targets)
        if reference is None:
            kept.append(lp.astype(np.float32))
        else:
            ref = reference[i].astype(np.float64)
            kl += float((np.exp(ref) * (ref - lp)).sum())
    return math.exp(nll / count), kl / count, kept


def build(
    work: Path, checkpoint: Path | None, calibration_tokens: int, threads: int
) -> tuple[list[tuple[str, str, Path]], str]:
    """The files to score (type, imatrix, path) and a line saying what the matrix was measured on."""
    from quant_helpers import embedded_as_checkpoint

    started = time.perf_counter()
    if checkpoint is None:
        checkpoint = embedded_as_checkpoint(embedded_model_path(), work / "checkpoint")
    f32, f16 = work / "f32.gguf", work / "f16.gguf"
    export_checkpoint(checkpoint, f32, "f32")
    export_checkpoint(checkpoint, f16, "f16")
    print(f"checkpoint and exports: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    started = time.perf_counter()
    texts = calibration_texts(ROOT / "katpilot", limit_chars=4 * calibration_tokens)
    matrix = compute_imatrix(checkpoint, texts, max_tokens=calibration_tokens)
    note = (
        f"importance matrix: {matrix.tokens} tokens of {len(texts)} files of katpilot/ in {matrix.chunks} chunks "
        f"of {matrix.chunk_size}, {len(matrix)} tensors, {time.perf_counter() - started:.0f} s"
    )
    print(note, file=sys.stderr)
    files = [("f32", "—", f32), ("f16", "—", f16)]
    for kind in TYPES:
        for use in (False, True):
            out = work / f"{kind}{'-imatrix' if use else ''}.gguf"
            quantize(f32, out, kind, threads=threads, imatrix=matrix if use else None)
            files.append((kind, "yes" if use else "no", out))
    return files, note


def table(rows: list[Row], reference: Row) -> str:
    lines = [
        "| type | imatrix | size MiB | perplexity | ppl vs f16 | mean KL vs f16 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        change = 100 * (r.ppl / reference.ppl - 1)
        lines.append(f"| {r.type} | {r.imatrix} | {r.mib:.1f} | {r.ppl:.4f} | {change:+.2f}% | {r.kl:.5f} |")
    return "\n".join(lines)


def verdicts(rows: list[Row], reference: Row) -> list[str]:
    def change(kind: str, imatrix: str) -> float:
        row = next(r for r in rows if r.type == kind and r.imatrix == imatrix)
        return 100 * (row.ppl / reference.ppl - 1)

    out = []
    for kind, limit in (("q8_0", 0.5), ("q4_k_m", 5.0)):
        for imatrix in ("no", "yes"):
            found = change(kind, imatrix)
            out.append(
                f"{kind} ({'with' if imatrix == 'yes' else 'without'} the importance matrix) within {limit}% of f16: "
                f"{found:+.2f}%  {'ok' if found <= limit else 'MISSED'}"
            )
    for kind in TYPES:
        plain, weighted = (next(r for r in rows if r.type == kind and r.imatrix == i) for i in ("no", "yes"))
        better = weighted.ppl <= plain.ppl and weighted.kl <= plain.kl
        out.append(
            f"{kind} with the importance matrix: ppl {weighted.ppl:.4f} vs {plain.ppl:.4f}, "
            f"KL {weighted.kl:.5f} vs {plain.kl:.5f}  {'ok' if better else 'WORSE'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a Hugging Face checkpoint (default: the embedded model)")
    parser.add_argument("--tokens", type=int, default=3072, help="held-out tokens to score (windows of 512)")
    parser.add_argument("--calibration-tokens", type=int, default=16_384, help="tokens the importance matrix sees")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) to this file")
    parser.add_argument("--keep", type=Path, help="build the files in this directory and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files, note = build(work, args.checkpoint, args.calibration_tokens, args.threads)
        chunks = windows(work / "f16.gguf", held_out_text(), args.tokens)
        started = time.perf_counter()
        ppl, _, kept = score(work / "f16.gguf", chunks, None, args.threads)
        reference = Row("f16", "—", (work / "f16.gguf").stat().st_size / 2**20, ppl, 0.0)
        rows = []
        for kind, imatrix, path in files:
            if path.name == "f16.gguf":
                rows.append(reference)
                continue
            ppl, kl, _ = score(path, chunks, kept, args.threads)
            rows.append(Row(kind, imatrix, path.stat().st_size / 2**20, ppl, kl))
        print(f"scoring: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    scored = sum(len(c) - 1 for c in chunks)
    held = f"held-out: {scored} predicted tokens of {', '.join(HELD_OUT)} (Python {sys.version.split()[0]} stdlib), windows of {WINDOW}"
    report = "\n".join([table(rows, reference), "", held, note, "", *verdicts(rows, reference)])
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
