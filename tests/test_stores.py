"""Models people already have: each store's real on-disk layout, built in the test's private HOME
with the embedded GGUF linked in as the blob, listed, named, chosen with --model, and broken on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import DIGEST, link, ollama_model

from katpilot.config import load_settings
from katpilot.errors import ModelFileError
from katpilot.models import resolve_model
from katpilot.stores import discover

KATPILOT = [sys.executable, "-m", "katpilot"]


def build_stores(home: Path, model_path: Path) -> None:
    """One model in each store, in each store's own layout."""
    ollama = home / ".ollama" / "models"
    ollama_model(ollama, model_path, "registry.ollama.ai", "library", "smol-coder", "latest")
    link(model_path, home / ".lmstudio" / "models" / "bartowski" / "SmolLM2-GGUF" / "SmolLM2-Q4_1.gguf")
    (home / ".lmstudio" / "models" / "bartowski" / "SmolLM2-GGUF" / "mmproj-SmolLM2-f16.gguf").write_bytes(b"GGUF")
    link(model_path, home / ".cache" / "lm-studio" / "models" / "old" / "Legacy-GGUF" / "legacy.gguf")
    cache = home / ".cache" / "llama.cpp"
    link(model_path, cache / "HuggingFaceTB_SmolLM2-135M-Instruct-GGUF_smollm2-135m-instruct-q4_1.gguf")
    link(model_path, cache / "split-model-00001-of-00002.gguf")
    (cache / "split-model-00002-of-00002.gguf").write_bytes(b"GGUF second shard")
    hub = home / ".cache" / "huggingface" / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    blob = link(model_path, hub / "blobs" / ("ab" * 20))
    for revision in ("rev1", "rev2"):
        snapshot = hub / "snapshots" / revision
        snapshot.mkdir(parents=True)
        (snapshot / "smollm2-135m-instruct-q4_1.gguf").symlink_to(blob)


def test_one_blob_reached_from_every_store_is_listed_once_and_every_name_resolves(
    katpilot_home: Path, model_path: Path
) -> None:
    build_stores(katpilot_home, model_path)  # every store's file is a hard link to one blob
    found = discover()
    assert len(found.models) == 1 and found.notes == []
    model = found.models[0]
    assert (model.name, model.source) == ("smol-coder:latest", "ollama")
    assert model.path == katpilot_home / ".ollama" / "models" / "blobs" / f"sha256-{DIGEST}"
    assert (model.header.architecture, model.header.quantization, model.header.profile) == ("llama", "Q4_1", "plain")
    assert model.header.file_size == model_path.stat().st_size
    assert sorted(model.aliases) == sorted(
        [
            "bartowski/SmolLM2-GGUF:SmolLM2-Q4_1",
            "old/Legacy-GGUF:legacy",
            "HuggingFaceTB_SmolLM2-135M-Instruct-GGUF_smollm2-135m-instruct-q4_1",
            "split-model",
            "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:smollm2-135m-instruct-q4_1",
        ]
    )  # the projector, the second shard and the second HF revision are not models of their own
    settings = load_settings().settings
    assert {resolve_model(name, settings) for name in [model.name, *model.aliases]} == {model.path}


def test_store_names_and_split_files_with_separate_blobs(katpilot_home: Path, model_path: Path) -> None:
    """Each store's file a separate copy (no shared blob): every naming scheme shows."""
    home = katpilot_home
    ollama = home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    for i, (registry, ns, name, tag) in enumerate(
        [
            ("registry.ollama.ai", "library", "smol-coder", "latest"),
            ("registry.ollama.ai", "someone", "tiny", "q4"),
            ("hf.co", "org", "repo", "Q4_1"),
        ]
    ):
        digest = f"{i:02d}" * 32
        shutil.copy(model_path, ollama / "blobs" / f"sha256-{digest}")
        ollama_model(ollama, model_path, registry, ns, name, tag, digest=digest)
    lm = home / ".lmstudio" / "models" / "bartowski" / "SmolLM2-GGUF"
    lm.mkdir(parents=True)
    shutil.copy(model_path, lm / "SmolLM2-Q4_1.gguf")
    (lm / "mmproj-SmolLM2-f16.gguf").write_bytes(b"GGUF")
    cache = home / ".cache" / "llama.cpp"
    cache.mkdir(parents=True)
    shutil.copy(model_path, cache / "split-model-00001-of-00002.gguf")
    (cache / "split-model-00002-of-00002.gguf").write_bytes(b"GGUF second shard")
    hub = (
        home
        / ".cache"
        / "huggingface"
        / "hub"
        / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
        / "snapshots"
        / "r1"
    )
    hub.mkdir(parents=True)
    shutil.copy(model_path, hub / "smollm2-135m-instruct-q4_1.gguf")
    extra = home / "my-models"
    extra.mkdir()
    shutil.copy(model_path, extra / "mine.gguf")
    (extra / "again").symlink_to(extra, target_is_directory=True)  # a link back up: walked once, no notes
    from katpilot.models import model_dirs

    settings = load_settings({"model_dirs": str(extra)}).settings
    found = discover(model_dirs=model_dirs(settings))
    assert {m.name: m.source for m in found.models} == {
        "smol-coder:latest": "ollama",
        "someone/tiny:q4": "ollama",
        "hf.co/org/repo:Q4_1": "ollama",
        "bartowski/SmolLM2-GGUF:SmolLM2-Q4_1": "lmstudio",
        "split-model": "llama.cpp",
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:smollm2-135m-instruct-q4_1": "huggingface",
        "mine": "dir",
    }
    assert found.notes == []
    from katpilot.stores import stored_models

    walked, _ = stored_models({}, [extra])
    assert [m.path for m in walked if m.source == "dir"] == [
        extra / "mine.gguf"
    ]  # the link back up: not followed round


def test_model_names_resolve_exactly_with_latest_implied_or_by_unique_prefix(
    katpilot_home: Path, model_path: Path
) -> None:
    ollama = katpilot_home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    for i, (name, tag) in enumerate([("smol-coder", "latest"), ("smol-coder", "q8"), ("other", "1b")]):
        digest = f"{i + 1:02d}" * 32
        shutil.copy(model_path, ollama / "blobs" / f"sha256-{digest}")
        ollama_model(ollama, model_path, "registry.ollama.ai", "library", name, tag, digest=digest)
    settings = load_settings().settings
    blob = ollama / "blobs" / f"sha256-{'01' * 32}"
    assert resolve_model("smol-coder", settings) == blob  # :latest implied
    assert resolve_model("smol-coder:latest", settings) == blob
    assert resolve_model("oth", settings) == ollama / "blobs" / f"sha256-{'03' * 32}"  # unique prefix
    with pytest.raises(ModelFileError, match="ambiguous: smol-coder:latest, smol-coder:q8"):
        resolve_model("smol-c", settings)
    with pytest.raises(ModelFileError) as unknown:
        resolve_model("smol-cder", settings)
    assert "no model named 'smol-cder'" in unknown.value.one_line()
    assert "did you mean smol-coder:q8, smol-coder:latest" in unknown.value.one_line()


def test_ask_answers_with_a_store_model_by_name(katpilot_home: Path, model_path: Path) -> None:
    ollama = katpilot_home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    ollama_model(ollama, model_path, "registry.ollama.ai", "library", "smol-coder", "latest")
    done = subprocess.run(
        [*KATPILOT, "ask", "--model", "smol-coder", "--max-tokens", "8", "--temperature", "0", "--json", "Say hello"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["answer"] and response["model"]
    listing = subprocess.run([*KATPILOT, "models", "--json"], capture_output=True, text=True, timeout=60)
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["smol-coder:latest"]["source"] == "ollama" and rows["smol-coder:latest"]["profile"] == "plain"
    info = subprocess.run(
        [*KATPILOT, "models", "info", "smol-coder", "--json"], capture_output=True, text=True, timeout=60
    )
    assert json.loads(info.stdout)["quantization"] == "Q4_1"


def test_a_corrupt_header_cache_is_rebuilt_not_a_crash(katpilot_home: Path, model_path: Path) -> None:
    ollama = katpilot_home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    ollama_model(ollama, model_path, "registry.ollama.ai", "library", "smol-coder", "latest")
    listing = [*KATPILOT, "models", "--json"]
    assert subprocess.run(listing, capture_output=True, text=True, timeout=60).returncode == 0
    cache = katpilot_home / "cache" / "models.json"
    good = json.loads(cache.read_text())
    key = next(k for k in good["entries"] if ".ollama" in k)  # the store's blob (the embedded model has one too)
    entry = good["entries"][key]
    broken_ways = [
        {"version": 1, "entries": ["not", "a", "table"]},
        {"version": 1, "entries": {key: "a string"}},
        {"version": 1, "entries": {key: {"stamp": entry["stamp"], "header": {**entry["header"], "extra": 1}}}},
        {"version": 1, "entries": {key: {"stamp": entry["stamp"], "header": {**entry["header"], "parameters": "x"}}}},
        {"version": 1, "entries": {key: {"stamp": entry["stamp"], "header": ["a list"]}}},
        {"version": 1, "entries": {key: {"stamp": entry["stamp"], "header": {**entry["header"], "file_size": "big"}}}},
        {"version": 1, "entries": {key: {"stamp": entry["stamp"], "header": {**entry["header"], "parameters": True}}}},
    ]
    for broken in broken_ways:
        cache.write_text(json.dumps(broken))
        done = subprocess.run(listing, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (broken, done.stderr)
        assert "smol-coder:latest" in {row["name"] for row in json.loads(done.stdout)}
        asked = subprocess.run(
            [*KATPILOT, "models", "info", "smol-coder", "--json"], capture_output=True, text=True, timeout=60
        )
        assert asked.returncode == 0 and json.loads(asked.stdout)["quantization"] == "Q4_1", asked.stderr
    assert json.loads(cache.read_text())["entries"][key] == entry  # rewritten whole


def test_broken_manifest_truncated_blob_and_missing_blob_are_skipped_with_a_note(
    katpilot_home: Path, model_path: Path
) -> None:
    ollama = katpilot_home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    ollama_model(ollama, model_path, "registry.ollama.ai", "library", "good", "latest")
    broken = ollama / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"layers": [')
    truncated = "5a" * 32
    (ollama / "blobs" / f"sha256-{truncated}").write_bytes(model_path.read_bytes()[:4096])
    ollama_model(ollama, model_path, "registry.ollama.ai", "library", "cut", "latest", digest=truncated)
    gone = ollama_model(ollama, model_path, "registry.ollama.ai", "library", "gone", "latest", digest="6b" * 32)
    (ollama / "blobs" / f"sha256-{'6b' * 32}").unlink()
    found = discover()
    assert [m.name for m in found.models] == ["good:latest"]
    notes = "\n".join(found.notes)
    assert "manifest manifests/registry.ollama.ai/library/broken/latest is broken" in notes
    assert "truncated" in notes and f"sha256-{truncated}" in notes
    assert f"its blob sha256-{'6b' * 32} is missing" in notes and gone.exists()
    assert len(found.notes) == 3
    listing = subprocess.run([*KATPILOT, "models"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "good:latest" in listing.stdout
    assert "3 store entries skipped (--verbose says why)" in listing.stderr
    verbose = subprocess.run([*KATPILOT, "models", "--verbose"], capture_output=True, text=True, timeout=60)
    assert verbose.stderr.count("katpilot: ollama:") == 3 and "Traceback" not in verbose.stderr


def test_an_unreadable_directory_is_skipped_with_a_note(katpilot_home: Path, model_path: Path) -> None:
    lm = katpilot_home / ".lmstudio" / "models" / "pub"
    link(model_path, lm / "Readable-GGUF" / "r.gguf")
    locked = lm / "Locked-GGUF"
    link(model_path, locked / "x.gguf").chmod(0o644)
    locked.chmod(0)
    command = [*KATPILOT, "models", "--verbose"]
    if os.geteuid() == 0:  # root reads any directory: run without the capabilities that allow it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv (util-linux) is not installed to drop CAP_DAC_OVERRIDE")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(stat.S_IRWXU)
    assert done.returncode == 0, done.stderr
    assert "pub/Readable-GGUF:r" in done.stdout and "Locked" not in done.stdout
    assert f"lmstudio: cannot read {locked} (Permission denied): skipped" in done.stderr


def test_a_registered_model_is_listed_by_name_from_katpilots_own_store(katpilot_home: Path, model_path: Path) -> None:
    from katpilot.models import register_model
    from katpilot.paths import models_dir

    exported = katpilot_home / "runs" / "mine.gguf"
    exported.parent.mkdir()
    shutil.copyfile(model_path, exported)
    registered = register_model(exported, "tiny-autothink")
    assert registered == models_dir() / "tiny-autothink.gguf" and registered.read_bytes() == exported.read_bytes()
    assert register_model(exported, "tiny-autothink") == registered  # registering again replaces it
    rows = {m.name: m for m in discover().models}
    assert rows["tiny-autothink"].source == "katpilot" and rows["tiny-autothink"].path == registered
    assert resolve_model("tiny-autothink", load_settings().settings) == registered

    with pytest.raises(ModelFileError, match="cannot name a model"):
        register_model(exported, "../escape")
    broken = katpilot_home / "broken.gguf"
    broken.write_text("not a model")
    with pytest.raises(ModelFileError):
        register_model(broken, "broken")
    assert sorted(p.name for p in models_dir().iterdir()) == ["tiny-autothink.gguf"]  # nothing half-written
