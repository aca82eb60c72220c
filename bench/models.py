"""Listing the models people have: 50 GGUFs across Ollama, LM Studio, llama.cpp and Hugging Face.

    python bench/models.py [--models 50]

Target (issue 21): 50 models listed in under 0.5 s warm (headers cached by path, size and mtime).
The models are sparse copies of the embedded GGUF (its header, then a hole up to its full size), so
each is a distinct file with a real header that costs little disk. Cold = no header cache; warm =
the second listing. The CLI line adds the interpreter's start and imports (`katpilot models`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from katpilot.models import embedded_model_path

HEADER_BYTES = 4 * 2**20  # more than the embedded model's metadata and tensor infos


def sparse_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as f:
        head = f.read(HEADER_BYTES)
    with dst.open("wb") as f:
        f.write(head)
        f.truncate(src.stat().st_size)


def build(home: Path, count: int, src: Path) -> None:
    for i in range(count):
        kind = i % 4
        if kind == 0:
            root = home / ".ollama" / "models"
            digest = f"{i:064x}"
            sparse_copy(src, root / "blobs" / f"sha256-{digest}")
            manifest = root / "manifests" / "registry.ollama.ai" / "library" / f"model{i}" / "latest"
            manifest.parent.mkdir(parents=True, exist_ok=True)
            layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
            manifest.write_text(json.dumps({"layers": [layer]}))
        elif kind == 1:
            sparse_copy(src, home / ".lmstudio" / "models" / "pub" / f"Model{i}-GGUF" / f"model{i}-Q4_1.gguf")
        elif kind == 2:
            sparse_copy(src, home / ".cache" / "llama.cpp" / f"org_repo{i}_model{i}.gguf")
        else:
            snapshot = home / ".cache" / "huggingface" / "hub" / f"models--org--repo{i}" / "snapshots" / "main"
            sparse_copy(src, snapshot / f"model{i}.gguf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        build(home, args.models, embedded_model_path())
        for name in ("OLLAMA_MODELS", "LLAMA_CACHE", "HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
            os.environ.pop(name, None)
        os.environ |= {"HOME": str(home), "KATPILOT_HOME": str(home / "katpilot")}
        from katpilot.stores import discover

        start = time.perf_counter()
        found = discover()
        cold = time.perf_counter() - start
        assert len(found.models) == args.models, (len(found.models), found.notes)
        warm_runs = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            discover()
            warm_runs.append(time.perf_counter() - start)
        warm = statistics.median(warm_runs)
        cli_runs = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "katpilot", "models"], check=True, capture_output=True)
            cli_runs.append(time.perf_counter() - start)
        print(
            f"{len(found.models)} models  cold {cold:.3f} s   warm {warm:.3f} s  (target warm < 0.5)  {'ok' if warm < 0.5 else 'MISSED'}"
        )
        print(f"katpilot models (whole command, warm): {statistics.median(cli_runs):.3f} s")


if __name__ == "__main__":
    main()
