"""GGUF models people already have: Ollama, LM Studio, llama.cpp's cache, the Hugging Face cache,
configured directories, and katpilot's own store (models a recipe trained and registered by name).

katpilot downloads nothing, so it finds what the user's other tools have pulled. Each store has its
own layout and naming; this module turns each into `StoredModel(name, path, source)`, then
`discover` reads every file's header (our own GGUF reader, never the tensors), keeps what is a
loadable chat model, and drops duplicates (the same blob reached twice). Headers are cached by
path, size and modification time, so a warm listing only stats files.

Nothing here raises for a broken store: a missing directory is silent (the user does not have that
tool), and an unreadable directory, a broken manifest or a truncated blob is a one-line note.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from katpilot.errors import KatpilotError
from katpilot.paths import cache_dir, models_dir

SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_REGISTRY = "registry.ollama.ai"
CACHE_FILE = "models.json"
CACHE_VERSION = 1


@dataclass(frozen=True)
class StoredModel:
    """A GGUF file found in a store, with the name the user types for it."""

    name: str
    path: Path
    source: str  # ollama, lmstudio, llama.cpp, huggingface, dir, katpilot


@dataclass(frozen=True)
class ModelHeader:
    """What the listing shows, read from the GGUF header."""

    architecture: str
    quantization: str
    parameters: int
    context_length: int | None
    profile: str  # kat, think or plain (profiles.detect_profile)
    file_size: int


@dataclass
class FoundModel:
    name: str
    path: Path
    source: str
    header: ModelHeader
    aliases: list[str] = field(default_factory=list)  # other names of the same file (tags, links, revisions)


@dataclass
class Discovery:
    models: list[FoundModel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why (one line each)


# -- where each store lives -----------------------------------------------------------------------


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def store_roots(environ: Mapping[str, str]) -> dict[str, list[Path]]:
    """The directories each tool keeps its models in, by the tool's own environment variables."""
    home = _home(environ)
    hf = environ.get("HF_HUB_CACHE") or (str(Path(environ["HF_HOME"]) / "hub") if environ.get("HF_HOME") else None)
    xdg_cache = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
    return {
        "ollama": [Path(environ.get("OLLAMA_MODELS") or home / ".ollama" / "models")],
        "lmstudio": [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"],
        "llama.cpp": [Path(environ.get("LLAMA_CACHE") or xdg_cache / "llama.cpp")],
        "huggingface": [Path(hf) if hf else xdg_cache / "huggingface" / "hub"],
        "katpilot": [models_dir()],
    }


def stored_models(environ: Mapping[str, str], model_dirs: list[Path]) -> tuple[list[StoredModel], list[str]]:
    """Every GGUF file the stores name, before reading any header; and notes on what was skipped."""
    roots = store_roots(environ)
    notes: list[str] = []
    found: list[StoredModel] = []
    scanners = {
        "ollama": _ollama,
        "lmstudio": _lmstudio,
        "llama.cpp": _llama_cpp,
        "huggingface": _huggingface,
        "katpilot": _katpilot,
    }
    for source, paths in roots.items():
        for root in paths:
            if root.is_dir():
                found += _guarded(scanners[source](root, notes), root, source, notes)
    for root in model_dirs:
        if not root.is_dir():
            notes.append(f"model_dirs: {root} is not a directory: skipped")
            continue
        found += _guarded(_flat(root, notes, "dir"), root, "dir", notes)
    return found, notes


def _guarded(models: Iterator[StoredModel], root: Path, source: str, notes: list[str]) -> list[StoredModel]:
    """A scanner's results; an unreadable part of the store becomes a note, never an exception."""
    out = []
    try:
        for model in models:
            out.append(model)
    except OSError as exc:
        notes.append(f"{source}: cannot read {exc.filename or root} ({exc.strerror}): skipped")
    return out


def _listdir(path: Path, notes: list[str], source: str) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError as exc:
        notes.append(f"{source}: cannot read {path} ({exc.strerror}): skipped")
        return []


def _ggufs(
    directory: Path, notes: list[str], source: str, recursive: bool = False, seen: set[tuple[int, int]] | None = None
) -> Iterator[Path]:
    """The model files of a directory: *.gguf, once per split model, projectors left out. Each
    directory is walked once, so a symbolic link back up the tree is not followed round and round."""
    seen = set() if seen is None else seen
    try:
        info = directory.stat()
    except OSError:
        info = None  # _listdir says why it cannot be read
    if info is not None:
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
    for entry in _listdir(directory, notes, source):
        if entry.is_dir() and recursive:
            yield from _ggufs(entry, notes, source, recursive, seen)
            continue
        name = entry.name.lower()
        if not name.endswith(".gguf") or "mmproj" in name or not entry.is_file():
            continue
        split = SPLIT.search(entry.name)
        if split and split.group(1) != "00001":
            continue  # the first shard stands for the model
        yield entry


def display_stem(path: Path) -> str:
    """The file's name without `.gguf` and without a split suffix (`-00001-of-00003`)."""
    return SPLIT.sub("", path.name).removesuffix(".gguf").removesuffix(".GGUF")


def _ollama(root: Path, notes: list[str]) -> Iterator[StoredModel]:
    """manifests/<registry>/<namespace>/<model>/<tag> -> the model layer's blob (blobs/sha256-<hex>)."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        return
    for registry in _listdir(manifests, notes, "ollama"):
        for namespace in _listdir(registry, notes, "ollama") if registry.is_dir() else []:
            for model in _listdir(namespace, notes, "ollama") if namespace.is_dir() else []:
                for tag in _listdir(model, notes, "ollama") if model.is_dir() else []:
                    blob = _ollama_blob(root, tag, notes)
                    if blob is not None:
                        yield StoredModel(
                            _ollama_name(registry.name, namespace.name, model.name, tag.name), blob, "ollama"
                        )


def _ollama_name(registry: str, namespace: str, model: str, tag: str) -> str:
    """As Ollama prints it: `qwen2.5-coder:1.5b`, `user/model:tag`, `host/ns/model:tag`."""
    if registry != OLLAMA_DEFAULT_REGISTRY:
        return f"{registry}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"


def _ollama_blob(root: Path, manifest: Path, notes: list[str]) -> Path | None:
    where = f"ollama: manifest {manifest.relative_to(root)}"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        layers = data["layers"]
        digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER)
    except OSError as exc:
        notes.append(f"{where}: cannot read it ({exc.strerror}): skipped")
        return None
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        notes.append(f"{where} is broken (no model layer): skipped")
        return None
    if not isinstance(digest, str) or not re.fullmatch(r"sha256[:-][0-9a-f]{64}", digest):
        notes.append(f"{where} names an invalid digest {str(digest)[:40]!r}: skipped")
        return None
    blob = root / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        notes.append(f"{where}: its blob {blob.name} is missing: skipped")
        return None
    return blob


def _lmstudio(root: Path, notes: list[str]) -> Iterator[StoredModel]:
    """<publisher>/<model>/*.gguf, named publisher/model:file."""
    for publisher in _listdir(root, notes, "lmstudio"):
        for model in _listdir(publisher, notes, "lmstudio") if publisher.is_dir() else []:
            if model.is_dir():
                for path in _ggufs(model, notes, "lmstudio"):
                    yield StoredModel(f"{publisher.name}/{model.name}:{display_stem(path)}", path, "lmstudio")


def _llama_cpp(root: Path, notes: list[str]) -> Iterator[StoredModel]:
    return _flat(root, notes, "llama.cpp")


def _katpilot(root: Path, notes: list[str]) -> Iterator[StoredModel]:
    """`register_model`'s files: NAME.gguf, beside it NAME.mtp.gguf (MTP heads, not a model to list)."""
    for model in _flat(root, notes, "katpilot"):
        if not model.path.name.endswith(".mtp.gguf"):
            yield model


def _flat(root: Path, notes: list[str], source: str) -> Iterator[StoredModel]:
    """Any *.gguf under the directory (llama.cpp's cache, model_dirs), named by the file."""
    for path in _ggufs(root, notes, source, recursive=True):
        yield StoredModel(display_stem(path), path, source)


def _huggingface(root: Path, notes: list[str]) -> Iterator[StoredModel]:
    """models--<org>--<name>/snapshots/<rev>/**.gguf, named org/name:file (newest revision first)."""
    for repo in _listdir(root, notes, "huggingface"):
        if not (repo.name.startswith("models--") and repo.is_dir()):
            continue
        repo_id = repo.name.removeprefix("models--").replace("--", "/")
        snapshots = repo / "snapshots"
        revisions = _listdir(snapshots, notes, "huggingface") if snapshots.is_dir() else []
        revisions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for revision in revisions:
            for path in _ggufs(revision, notes, "huggingface", recursive=True):
                yield StoredModel(f"{repo_id}:{display_stem(path)}", path, "huggingface")


# -- reading headers, with a cache ----------------------------------------------------------------


class HeaderCache:
    """Headers by path, valid while the file's size and modification time are the same."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / CACHE_FILE
        self.entries: dict[str, dict[str, object]] = {}
        self.changed = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") == CACHE_VERSION and isinstance(data["entries"], dict):
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no cache yet, or an unreadable one: rebuilt

    def header(self, path: Path) -> ModelHeader | str:
        """The file's header, or why it is not a usable chat model (a one-line reason)."""
        stat = path.stat()
        key = str(path)
        stamp = [stat.st_size, stat.st_mtime_ns]
        known = _from_cache(self.entries.get(key), stamp)
        if known is not None:
            return known
        result = read_header(path)
        entry: dict[str, object] = {"stamp": stamp}
        if isinstance(result, str):
            entry["problem"] = result
        else:
            entry["header"] = asdict(result)
        self.entries[key] = entry
        self.changed = True
        return result

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": self.entries}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written only makes the next listing slower


def _from_cache(cached: object, stamp: list[int]) -> ModelHeader | str | None:
    """A cache entry's header or problem; None when it is stale or not what we write (an edited or
    foreign cache file is rebuilt, never a crash)."""
    if not isinstance(cached, dict) or cached.get("stamp") != stamp:
        return None
    if isinstance(cached.get("problem"), str):
        return str(cached["problem"])
    fields = cached.get("header")
    try:
        header = ModelHeader(**fields) if isinstance(fields, dict) else None
    except TypeError:
        return None
    if header is None:
        return None
    texts = (header.architecture, header.quantization, header.profile)
    numbers = (header.parameters, header.file_size, 0 if header.context_length is None else header.context_length)
    if all(isinstance(t, str) for t in texts) and all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        return header
    return None


def read_header(path: Path) -> ModelHeader | str:
    """The header of a chat model, or why the file is left out."""
    from katpilot.gguf_file import read_gguf
    from katpilot.profiles import detect_profile

    try:
        summary = read_gguf(path)
    except KatpilotError as exc:
        return exc.message
    if summary.tokenizer_model is None:
        return f"{path.name} is not a language model ({summary.architecture}, no tokenizer)"
    if not summary.chat_template:
        return f"{path.name} has no chat template (a base model, not a chat model)"
    return ModelHeader(
        architecture=summary.architecture,
        quantization=summary.file_type,
        parameters=summary.parameter_count,
        context_length=summary.context_length,
        profile=detect_profile(summary.chat_template, summary.tags_in_vocab).name,
        file_size=summary.file_size,
    )


def discover(
    environ: Mapping[str, str] | None = None, model_dirs: list[Path] | None = None, cache: HeaderCache | None = None
) -> Discovery:
    """Every usable chat model in the stores, each once, with notes on what was left out.

    `cache`: a caller that reads other headers too (`models.list_models`) shares its cache, so the
    cache file is read and written once.
    """
    environ = os.environ if environ is None else environ
    stored, notes = stored_models(environ, model_dirs or [])
    cache = cache or HeaderCache()
    result = Discovery(notes=notes)
    seen: dict[tuple[int, int], FoundModel] = {}
    taken: set[str] = set()
    for model in stored:
        try:
            stat = model.path.stat()
            header = cache.header(model.path)
        except OSError as exc:
            result.notes.append(f"{model.source}: cannot read {model.path} ({exc.strerror}): skipped")
            continue
        if isinstance(header, str):
            result.notes.append(f"{model.source}: {header}: skipped")
            continue
        if model.name in taken:
            continue  # an older revision's file of a name already found
        taken.add(model.name)
        identity = (stat.st_dev, stat.st_ino)
        if identity in seen:
            seen[identity].aliases.append(model.name)  # the same blob reached twice: listed once
            continue
        seen[identity] = FoundModel(model.name, model.path, model.source, header)
        result.models.append(seen[identity])
    cache.save()
    return result
