"""`katpilot quant export`: its speed against a plain copy of the same bytes, its memory against the largest tensor.

    python bench/quant.py [--checkpoint DIR] [--synthetic-mb 1024] [--rounds 3]

Targets (issue 16):
- throughput: copy s / export s >= 0.5, both over the same source (the checkpoint's safetensors
  files) and writing into the same directory on the same disk, in the same run, rounds interleaved
  (copy, f32, f16) so that drift hits all alike; medians. The copy is `shutil.copyfile` followed by
  an fsync of the destination, because the export fsyncs its output before renaming it (the ratio
  against the copy without its fsync, which stops at the page cache, is printed too). The source is
  read once before timing, so both start from a warm page cache: this measures the export's
  conversion and write path, not a cold read of the source. The copy is of the larger side: an
  export that writes more bytes than it reads (bf16 -> f32) is held to a copy of what it writes,
  one that writes fewer (f32 -> f16) to a copy of what it reads;
- memory: each export runs in a fresh interpreter; its peak RSS (VmHWM, reset after the imports
  through /proc/self/clear_refs) minus its RSS after the imports (the constant) against the largest
  tensor's size as float32, since the reader converts every block to float32: increase / largest
  <= 1.5, and the increase must not follow the model's size. The increase is a few read blocks
  (quant.checkpoint.row_blocks' budget) plus the tokenizer's metadata, so the ratio holds for models
  whose largest tensor is well above that budget, as every real LLM's embedding is; a toy model whose
  largest tensor fits in one block measures several times it.

Checkpoints: the embedded SmolLM2-135M through transformers (float32; built in a temporary directory
in ~40 s unless --checkpoint is given), and a synthetic bf16 llama of about --synthetic-mb MiB with
many narrow blocks (random weights, the first checkpoint's tokenizer), so that the model is many
times its largest tensor.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Run as `python bench/quant.py`, this file's directory comes first on sys.path and its name would hide
# the quant package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
from quant.checkpoint import open_checkpoint, row_blocks, safetensors_files  # noqa: E402
from quant.export import export_checkpoint  # noqa: E402

THROUGHPUT_TARGET = 0.5  # copy s / export s
MEMORY_TARGET = 1.5  # peak RSS increase / largest tensor as float32
MIB = 2**20
TYPES = ("f32", "f16")
TESTS = Path(__file__).resolve().parent.parent / "tests"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")

# The embedded GGUF through transformers, in a child so that torch never enters this process.
BUILD = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
from quant_helpers import embedded_as_checkpoint
from katpilot.models import embedded_model_path
embedded_as_checkpoint(embedded_model_path(), Path(sys.argv[1]))
"""

# One export in a fresh interpreter: RSS after the imports, then the peak of the export alone.
MEASURE = """
import json, sys
from pathlib import Path
from quant.export import export_checkpoint

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    reset = True
except OSError:
    reset = False  # VmHWM then includes the imports' own peak: the increase is an upper bound
base = status("VmRSS")
export_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
print(json.dumps({"base": base, "peak": status("VmHWM"), "reset": reset}))
"""


@dataclass(frozen=True)
class Source:
    label: str
    path: Path
    files: list[Path]
    bytes: int  # safetensors files, as stored
    as_f32: int  # every tensor as float32
    largest: str
    largest_f32: int


def describe(label: str, path: Path) -> Source:
    ckpt = open_checkpoint(path)
    files = safetensors_files(path, "model")
    dtypes = "/".join(sorted({t.dtype for t in ckpt.tensors.values()}))
    big = max(ckpt.tensors.values(), key=lambda t: math.prod(t.shape))
    as_f32 = sum(4 * math.prod(t.shape) for t in ckpt.tensors.values())
    size = sum(f.stat().st_size for f in files)
    return Source(f"{label} ({dtypes})", path, files, size, as_f32, big.name, 4 * math.prod(big.shape))


def build_embedded(dest: Path) -> Path:
    print(f"building the embedded model's checkpoint in {dest} (through transformers, ~40 s)", flush=True)
    done = subprocess.run([sys.executable, "-c", BUILD, str(dest)], capture_output=True, text=True, cwd=dest.parent)
    if done.returncode:
        sys.exit(f"building the checkpoint failed:\n{done.stderr[-4000:]}")
    return dest


def write_synthetic(dest: Path, tokenizer_from: Path, mib: int) -> Path:
    """A llama in bf16 of about `mib` MiB: tied embeddings, many narrow blocks, our own safetensors writer
    (numpy has no bfloat16), written tensor by tensor from a pool of random values."""
    source = json.loads((tokenizer_from / "config.json").read_text())
    # Narrow blocks: the embedding (vocab x 512, 96 MiB as float32 for SmolLM2's vocabulary) stays the
    # largest tensor and the model grows by its number of blocks (~6 MiB each).
    vocab, hidden, heads, kv_heads, ff = int(source["vocab_size"]), 512, 8, 4, 1536
    head_dim = hidden // heads
    block = {
        "input_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (heads * head_dim, hidden),
        "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
        "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
        "self_attn.o_proj.weight": (hidden, heads * head_dim),
        "post_attention_layernorm.weight": (hidden,),
        "mlp.gate_proj.weight": (ff, hidden),
        "mlp.up_proj.weight": (ff, hidden),
        "mlp.down_proj.weight": (hidden, ff),
    }
    per_block = 2 * sum(math.prod(s) for s in block.values())
    layers = max(1, (mib * MIB - 2 * vocab * hidden) // per_block)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        shapes |= {f"model.layers.{i}.{name}": shape for name, shape in block.items()}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(4 * MIB, dtype=np.float32) * 0.02).view(np.uint32) >> 16
    pool_bytes = pool.astype("<u2").tobytes()
    ones = np.full(hidden, 0x3F80, dtype="<u2").tobytes()  # 1.0 in bf16
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        at = 0
        for shape in shapes.values():
            if len(shape) == 1:
                f.write(ones)
                continue
            left = 2 * math.prod(shape)
            while left:
                piece = pool_bytes[at : at + left]
                f.write(piece)
                left -= len(piece)
                at = (at + len(piece)) % len(pool_bytes)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": source.get("bos_token_id"),
        "eos_token_id": source.get("eos_token_id"),
    }
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copy(tokenizer_from / name, dest / name)
    return dest


def read_through(files: list[Path]) -> None:
    """Bring the source into the page cache, so that the copy and the export both read it warm."""
    for file in files:
        with open(file, "rb") as f:
            while f.read(16 * MIB):
                pass


def timed_copy(files: list[Path], out: Path) -> tuple[float, float]:
    """Seconds for shutil.copyfile of every file: up to the page cache, and with the fsync the export also does."""
    start = time.perf_counter()
    copies = []
    for file in files:
        copies.append(out / f"copy-{file.name}")
        shutil.copyfile(file, copies[-1])
    cached = time.perf_counter() - start
    for copy in copies:
        fd = os.open(copy, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    synced = time.perf_counter() - start
    for copy in copies:
        copy.unlink()
    os.sync()  # the next timing starts with nothing of this one left to write back
    return cached, synced


@dataclass
class Timing:
    total: float
    setup: float  # opening, checks, tokenizer and other metadata, until the first tensor's bytes
    tensors: float
    tail: float  # after the last tensor: fsync, close, rename
    out_bytes: int


def timed_export(source: Path, out: Path, kind: str) -> Timing:
    """One export, split by its progress calls into setup, tensor streaming and the final fsync."""
    marks: list[tuple[float, int]] = []
    target = out / f"export.{kind}.gguf"
    start = time.perf_counter()
    report = export_checkpoint(
        source, target, kind, progress=lambda _phase, done, _total: marks.append((time.perf_counter(), done))
    )
    end = time.perf_counter()
    target.unlink()
    os.sync()
    (t1, d1), (tn, dn) = marks[0], marks[-1]
    first = d1 * (tn - t1) / (dn - d1) if dn > d1 else t1 - start  # the first tensor, at the rest's rate
    setup = max(0.0, t1 - start - first)
    return Timing(end - start, setup, tn - start - setup, end - tn, report.output_bytes)


def median_timing(runs: list[Timing]) -> Timing:
    def median(field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in runs))

    return Timing(median("total"), median("setup"), median("tensors"), median("tail"), runs[0].out_bytes)


@dataclass
class Throughput:
    copy: float  # copyfile + fsync, median
    copy_cached: float  # copyfile alone, median
    exports: dict[str, Timing]  # type -> median


def bench_throughput(src: Source, out: Path, rounds: int) -> Throughput:
    read_through(src.files)
    for kind in TYPES:  # warm up: imports, the tokenizer's files, the output directory
        timed_export(src.path, out, kind)
    copies: list[tuple[float, float]] = []
    exports: dict[str, list[Timing]] = {kind: [] for kind in TYPES}
    for _ in range(rounds):
        copies.append(timed_copy(src.files, out))
        for kind in TYPES:
            exports[kind].append(timed_export(src.path, out, kind))
    return Throughput(
        statistics.median(c[1] for c in copies),
        statistics.median(c[0] for c in copies),
        {kind: median_timing(runs) for kind, runs in exports.items()},
    )


@dataclass
class Memory:
    base: int  # RSS after the imports
    increase: int  # peak RSS during the export - base
    reset: bool  # whether VmHWM could be reset after the imports (else the increase is an upper bound)


def measure_memory(source: Path, out: Path, kind: str) -> Memory:
    target = out / f"memory.{kind}.gguf"
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(target), kind], capture_output=True, text=True, cwd=out
    )
    if done.returncode:
        sys.exit(f"the export in a fresh interpreter failed:\n{done.stderr[-4000:]}")
    target.unlink()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Memory(result["base"], result["peak"] - result["base"], result["reset"])


def print_throughput(sources: list[Source], speed: dict[str, Throughput], rounds: int) -> tuple[float, str]:
    print(
        f"\nthroughput: median of {rounds} interleaved rounds, warm page cache, every output fsynced;"
        " ratio = copy s / export s for the same source bytes; per out byte: against a copy of the bytes written"
    )
    print(
        f"{'checkpoint':<20}{'source MiB':>11}{'copy s':>8}  {'type':<5}{'out MiB':>8}{'export s':>9}{'ratio':>7}"
        f"{'per out byte':>13}{'vs copy w/o fsync':>18}   export split s: setup / tensors / fsync+rename"
    )
    lowest = (math.inf, "")
    for src in sources:
        run = speed[src.label]
        for kind, t in run.exports.items():
            ratio = run.copy / t.total
            per_out = ratio * t.out_bytes / src.bytes  # against a copy of as many bytes as the export writes
            # the target: against a copy of the larger side, the bytes read or the bytes written (bf16 -> f32
            # writes twice what it reads, f32 -> f16 half: no copy moves fewer bytes than that side)
            lowest = min(lowest, (max(ratio, per_out), f"{src.label}, {kind}"))
            print(
                f"{src.label:<20}{src.bytes / MIB:>11.1f}{run.copy:>8.2f}  {kind:<5}{t.out_bytes / MIB:>8.1f}"
                f"{t.total:>9.2f}{ratio:>7.2f}{per_out:>13.2f}{run.copy_cached / t.total:>18.2f}"
                f"   {t.setup:.2f} / {t.tensors:.2f} / {t.tail:.2f}"
            )
    return lowest


def print_memory(sources: list[Source], memory: dict[tuple[str, str], Memory]) -> tuple[float, str]:
    budget = inspect.signature(row_blocks).parameters["budget"].default
    print(
        "\nmemory: one export per fresh interpreter; increase = peak RSS - RSS after the imports (base);"
        f" tensors and model as float32; read block budget {budget / MIB:.0f} MiB of float32 (quant.checkpoint.row_blocks)"
    )
    print(
        f"{'checkpoint':<20}{'largest tensor':<27}{'largest MiB':>12}{'model MiB':>10}"
        f"  {'type':<5}{'base MiB':>9}{'increase MiB':>13}{'incr/largest':>13}"
    )
    highest = (0.0, "")
    for src in sources:
        for kind in TYPES:
            m = memory[src.label, kind]
            ratio = m.increase / src.largest_f32
            highest = max(highest, (ratio, f"{src.label}, {kind}"))
            print(
                f"{src.label:<20}{src.largest:<27}{src.largest_f32 / MIB:>12.1f}{src.as_f32 / MIB:>10.1f}"
                f"  {kind:<5}{m.base / MIB:>9.1f}{m.increase / MIB:>13.1f}{ratio:>13.2f}"
                + ("" if m.reset else "  (VmHWM not reset: an upper bound)")
            )
    return highest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="a Hugging Face checkpoint (default: build the embedded model's)"
    )
    parser.add_argument("--synthetic-mb", type=int, default=1024, help="synthetic bf16 checkpoint, MiB (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="katpilot-bench-quant-") as tmp:
        work = Path(tmp)
        first = args.checkpoint or build_embedded(work / "embedded")
        sources = [describe(args.checkpoint.name if args.checkpoint else "smollm2-135m", first)]
        if args.synthetic_mb > 0:
            print(f"writing a synthetic bf16 llama of ~{args.synthetic_mb} MiB", flush=True)
            synthetic = write_synthetic(work / "synthetic", first, args.synthetic_mb)
            sources.append(describe("synthetic", synthetic))
        out = work / "out"
        out.mkdir()
        speed: dict[str, Throughput] = {}
        memory: dict[tuple[str, str], Memory] = {}
        for src in sources:
            print(f"timing {src.label}: {args.rounds} rounds of copy, {', '.join(TYPES)}", flush=True)
            speed[src.label] = bench_throughput(src, out, args.rounds)
            for kind in TYPES:
                memory[src.label, kind] = measure_memory(src.path, out, kind)
        load_after = os.getloadavg()[0]
        lowest = print_throughput(sources, speed, args.rounds)
        highest = print_memory(sources, memory)
    print(
        f"\nload average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs"
        " (other work on the machine slows the export's CPU-bound conversion more than the kernel's copy)"
    )
    verdict = "met" if lowest[0] >= THROUGHPUT_TARGET else "MISSED"
    print(
        f"throughput (copy s / export s >= {THROUGHPUT_TARGET}, the copy of the larger side, read or written): "
        f"{verdict}, lowest {lowest[0]:.2f} ({lowest[1]})"
    )
    verdict = "met" if highest[0] <= MEMORY_TARGET else "MISSED"
    print(
        f"memory (increase <= {MEMORY_TARGET}x the largest tensor): {verdict}, highest {highest[0]:.2f}x ({highest[1]})"
    )


if __name__ == "__main__":
    main()
