"""The on-disk layouts of the model stores (Ollama for now), written as the tools write them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

DIGEST = "3f" * 32


def link(src: Path, dst: Path) -> Path:
    """Hard-link (the same blob, as stores do), falling back to a copy across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)
    return dst


def ollama_model(
    root: Path, model_path: Path, registry: str, namespace: str, name: str, tag: str, digest: str = DIGEST
) -> Path:
    blob = root / "blobs" / f"sha256-{digest}"
    if not blob.exists():
        link(model_path, blob)
    manifest = root / "manifests" / registry / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 10},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": blob.stat().st_size},
    ]
    manifest.write_text(
        json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "layers": layers}
        )
    )
    return manifest
