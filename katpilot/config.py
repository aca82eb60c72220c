"""Settings: one typed object, resolved from defaults, the config file, the environment and flags.

Precedence, lowest to highest:

1. built-in defaults (the `Settings` field defaults);
2. the TOML file `paths.config_file()`: top-level keys named exactly like the fields, plus a
   `[models]` table of `name = "path/to/model.gguf"` aliases;
3. environment variables `KATPILOT_<NAME_UPPER>` (`KATPILOT_N_CTX=2048`, `KATPILOT_SEED=none`),
   parsed from strings; `none` or an empty value means None for optional settings. There is no
   variable for `models`. Any other `KATPILOT_*` variable (`KATPILOT_HOME`, ...) is ignored;
4. CLI flags: a mapping from field name to value, None meaning "not given".

Every source is validated the same way; all problems are collected and raised as one `ConfigError`
whose message lists them on one line, separated by "; ". `ResolvedConfig.sources` records where
each effective value came from, for `katpilot config show`.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from katpilot import paths
from katpilot.errors import ConfigError
from katpilot.terms import PROFILE_CHOICES, THINK_MODES, ProfileChoice, ThinkMode

ENV_PREFIX = "KATPILOT_"
SOURCE_DEFAULT = "default"
_NONE_WORDS = frozenset({"", "none"})
_SECRET_WORDS = ("key", "token", "secret", "password")
_MASK = "***"


@dataclass(frozen=True)
class _Rule:
    """How one setting is typed and bounded (kept in field metadata next to its description)."""

    kind: type  # str, int, float or dict
    optional: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    env: bool = True  # settable through KATPILOT_<NAME>

    def range_text(self) -> str:
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"in {'(' if self.min_exclusive else '['}{_num(lo)}, {_num(hi)}]"
        if lo is not None:
            return f"{'>' if self.min_exclusive else '>='} {_num(lo)}"
        return f"<= {_num(hi)}" if hi is not None else "any value"

    def in_range(self, value: float) -> bool:
        if self.minimum is not None and (value < self.minimum or (self.min_exclusive and value == self.minimum)):
            return False
        return self.maximum is None or value <= self.maximum


def _setting(default: Any, description: str, kind: type, **rule: Any) -> Any:
    metadata = {"description": description, "rule": _Rule(kind, **rule)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Every user setting, with its effective value. Build one with `load_settings`."""

    model: str | None = _setting(
        None,
        "GGUF path, a name from [models] or `katpilot models`, or a server: openai+http://host:port/v1#model; "
        "none = the embedded default model",
        str,
        optional=True,
    )
    profile: ProfileChoice = _setting(
        "auto",
        "AutoThink format family; auto = detect it from the GGUF",
        str,
        choices=PROFILE_CHOICES,
    )
    think: ThinkMode = _setting(
        "auto",
        "reasoning mode: auto = the model judges per request; on/off force it",
        str,
        choices=THINK_MODES,
    )
    budget: int | None = _setting(
        None,
        "max think tokens before the think block is closed; none = no limit",
        int,
        optional=True,
        minimum=1,
    )
    threshold: float = _setting(0.5, "think when p(on) >= threshold (think=auto)", float, minimum=0, maximum=1)
    temperature: float = _setting(0.7, "sampling temperature; 0 = greedy", float, minimum=0)
    top_p: float = _setting(
        0.95,
        "nucleus sampling: keep the smallest token set with this total probability",
        float,
        minimum=0,
        maximum=1,
        min_exclusive=True,
    )
    top_k: int = _setting(40, "keep only the k most likely tokens; 0 = no limit", int, minimum=0)
    min_p: float = _setting(
        0.05,
        "drop tokens less likely than min_p times the most likely one",
        float,
        minimum=0,
        maximum=1,
    )
    repeat_penalty: float = _setting(1.1, "penalty on repeated tokens; 1 = none", float, minimum=0, min_exclusive=True)
    seed: int | None = _setting(None, "sampling seed for reproducible output; none = random", int, optional=True)
    max_tokens: int = _setting(1024, "max tokens generated per response", int, minimum=1)
    n_ctx: int = _setting(4096, "context window in tokens", int, minimum=256)
    n_threads: int | None = _setting(None, "CPU threads for inference; none = automatic", int, optional=True, minimum=1)
    system_prompt: str = _setting(
        "You are katpilot, a concise and careful coding assistant.",
        "system prompt sent before every conversation",
        str,
    )
    api_key: str | None = _setting(
        None,
        "API key of a remote model server (--model openai+http://...); never printed; falls back to OPENAI_API_KEY",
        str,
        optional=True,
    )
    remote_gguf: str | None = _setting(
        None,
        "local GGUF (path or [models] name) giving a remote model's chat template and "
        "special tokens when its server does not report them",
        str,
        optional=True,
    )
    model_dirs: str | None = _setting(
        None,
        f"more directories searched for GGUF models (besides Ollama, LM Studio, llama.cpp and Hugging Face), separated by {os.pathsep!r}",
        str,
        optional=True,
    )
    models: dict[str, str] = _setting(
        {},
        'model aliases, the [models] table: name = "path/to/model.gguf" (use as --model NAME)',
        dict,
        env=False,
    )


@dataclass(frozen=True)
class ResolvedConfig:
    """Effective settings, where each value came from, and which config file was read."""

    settings: Settings
    # field name -> "default" | "config file <path>" | "env KATPILOT_X" | "flag --x-y"
    sources: dict[str, str]
    config_path: Path  # the file that was read (it may not exist)


# `katpilot serve --queue`: requests waiting or running at once. A flag only, not a setting (it sizes
# one server process). A small model answers in about a second, so 8 is several seconds of backlog;
# beyond that a client is better told to come back (429) than left hanging.
SERVE_QUEUE_DEFAULT = 8

SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Settings))
_RULES: dict[str, _Rule] = {f.name: f.metadata["rule"] for f in fields(Settings)}


def describe(field_name: str) -> str:
    """The one-line description of a setting (for `config show` and the docs)."""
    for f in fields(Settings):
        if f.name == field_name:
            return str(f.metadata["description"])
    raise ConfigError(
        f"unknown setting {field_name!r}{_suggest(field_name, SETTING_NAMES)}",
        "run `katpilot config show` to list the settings",
    )


def env_var(field_name: str) -> str:
    """The environment variable of a setting: `n_ctx` -> `KATPILOT_N_CTX`."""
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    """The CLI flag of a setting: `n_ctx` -> `--n-ctx`."""
    return "--" + field_name.replace("_", "-")


def load_settings(
    flags: Mapping[str, object] | None = None,
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedConfig:
    """Resolve the settings: defaults < config file < environment < flags.

    `config_path` defaults to `paths.config_file()` (a missing file is fine), `environ` to
    `os.environ`. Flags whose value is None were not given. Raises one `ConfigError` listing
    every problem found in any layer.
    """
    path = Path(config_path) if config_path is not None else paths.config_file()
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}
    sources = dict.fromkeys(SETTING_NAMES, SOURCE_DEFAULT)
    problems: list[tuple[str, str]] = []  # (problem, fix)

    for name, value, source in _file_layer(path, problems):
        values[name], sources[name] = value, source
    for name, value, source in _env_layer(env, problems):
        values[name], sources[name] = value, source
    for name, value, source in _flag_layer(flags or {}, problems):
        values[name], sources[name] = value, source

    if problems:
        fixes = list(dict.fromkeys(fix for _, fix in problems))
        raise ConfigError(_flatten("; ".join(problem for problem, _ in problems)), _flatten("; ".join(fixes)))
    return ResolvedConfig(settings=Settings(**values), sources=sources, config_path=path)


def render_show(resolved: ResolvedConfig) -> str:
    """The text of `katpilot config show`: the file, then one aligned line per setting.

    Values are shown as TOML literals (strings quoted, None as `none`); secret-looking settings
    (`api_key`, `hf_token`, ...; see `_is_secret`) are masked as `***`.
    """
    path = resolved.config_path
    try:
        state = "exists" if path.is_file() else ("not a file" if path.exists() else "not found")
    except OSError as exc:
        state = f"unreadable: {exc.strerror or exc}"
    lines = [f"config file: {path} ({state})", ""]

    rows: list[tuple[str, str, str]] = [("setting", "value", "source")]
    model_rows: list[tuple[str, str]] = []
    for f in fields(resolved.settings):
        value = getattr(resolved.settings, f.name)
        source = resolved.sources.get(f.name, SOURCE_DEFAULT)
        if isinstance(value, Mapping):
            shown = f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}" if value else "(none)"
            model_rows = [(str(k), _literal(v)) for k, v in value.items()]
        else:
            shown = _MASK if _is_secret(f.name) and value is not None else _literal(value)
        rows.append((f.name, shown, source))

    name_w = max(len(r[0]) for r in rows)
    value_w = min(max(len(r[1]) for r in rows), 48)
    for name, shown, source in rows:
        lines.append(f"{name:<{name_w}}  {shown:<{value_w}}  {source}".rstrip())
    if model_rows:
        lines += ["", "[models]"]
        alias_w = max(len(alias) for alias, _ in model_rows)
        lines += [f"{alias:<{alias_w}} = {target}" for alias, target in model_rows]
    return "\n".join(lines) + "\n"


# --- layers ---------------------------------------------------------------------------------------


# One value a layer sets: (setting name, checked value, where it came from).
LayerEntry = tuple[str, object, str]


def _file_layer(path: Path, problems: list[tuple[str, str]]) -> list[LayerEntry]:
    """(name, value, source) for each valid key of the config file; problems appended."""
    where = f"config file {path}"
    fix = f"edit {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        problems.append((f"cannot read {where}: it is a directory", f"remove or rename {path}"))
        return []
    except OSError as exc:
        problems.append((f"cannot read {where}: {exc.strerror or exc}", f"make {path} readable or delete it"))
        return []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append((f"{where} is not UTF-8 text (bad byte at offset {exc.start})", f"save {path} as UTF-8"))
        return []
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append((f"{where}: TOML syntax error: {_flatten(str(exc))}", f"edit or delete {path}"))
        return []

    found: list[LayerEntry] = []
    for key, value in data.items():
        if key not in _RULES:
            problems.append((f"{where}: unknown key {key!r}{_suggest(key, SETTING_NAMES)}", fix))
            continue
        checked, problem = _check(key, value)
        if problem:
            problems.append((f"{where}: key {key!r} {problem}", fix))
        else:
            found.append((key, checked, where))
    return found


def _env_layer(environ: Mapping[str, str], problems: list[tuple[str, str]]) -> list[LayerEntry]:
    found: list[LayerEntry] = []
    for name, rule in _RULES.items():
        var = env_var(name)
        if not rule.env or var not in environ:
            continue
        parsed, problem = _parse_text(name, environ[var])
        if problem is None:
            parsed, problem = _check(name, parsed)
        if problem:
            problems.append((f"env {var} {problem}", f"change or unset {var}"))
        else:
            found.append((name, parsed, f"env {var}"))
    return found


def _flag_layer(flags: Mapping[str, object], problems: list[tuple[str, str]]) -> list[LayerEntry]:
    found: list[LayerEntry] = []
    for name, value in flags.items():
        if value is None:
            continue
        flag = flag_name(name)
        if name not in _RULES:
            problems.append((f"unknown flag {flag}{_suggest(name, SETTING_NAMES)}", "see `katpilot --help`"))
            continue
        if isinstance(value, enum.Enum):  # typer choice options arrive as enum members
            value = value.value
        value, problem = check_value(name, value)
        if problem:
            problems.append((f"flag {flag} {problem}", f"change {flag}"))
        else:
            found.append((name, value, f"flag {flag}"))
    return found


# --- validation -----------------------------------------------------------------------------------


def check_value(name: str, value: Any) -> tuple[Any, str | None]:
    """A setting's value from a front end (a flag, an LSP option), normalised, or a problem.

    Strings are accepted for numeric settings ("--seed none", JSON "0.7"). `name` must be a setting.
    """
    if isinstance(value, str) and _RULES[name].kind in (int, float):
        value, problem = _parse_text(name, value)
        if problem:
            return None, problem
    return _check(name, value)


def _parse_text(name: str, text: str) -> tuple[Any, str | None]:
    """An environment (or string flag) value converted to the setting's type, or a problem."""
    rule = _RULES[name]
    if rule.optional and text.strip().lower() in _NONE_WORDS:
        return None, None
    if rule.kind is int:
        try:
            return int(text.strip()), None
        except ValueError:
            expected = "an integer or none" if rule.optional else "an integer"
            return None, f"must be {expected}, got {_show(name, text)}"
    if rule.kind is float:
        try:
            return float(text.strip()), None
        except ValueError:
            return None, f"must be a number, got {_show(name, text)}"
    if rule.choices:
        return text.strip().lower(), None
    return text, None


def _check(name: str, value: Any) -> tuple[Any, str | None]:
    """The value, normalised (int -> float for float settings), or a problem ("must be ...")."""
    rule = _RULES[name]
    if value is None and rule.optional:
        return None, None
    if rule.kind is dict:
        return _check_table(name, value)
    if rule.kind is str:
        if not isinstance(value, str):
            return None, f"must be a string, got {_toml_type(value)} {_show(name, value)}"
        if rule.choices and value not in rule.choices:
            choices = ", ".join(repr(c) for c in rule.choices)
            return None, f"must be one of {choices}, got {_show(name, value)}"
        return value, None
    if rule.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"must be an integer, got {_toml_type(value)} {_show(name, value)}"
    else:  # float: ints are fine
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"must be a number, got {_toml_type(value)} {_show(name, value)}"
        value = float(value)
        if not math.isfinite(value):
            return None, f"must be a finite number, got {_show(name, value)}"
    if not rule.in_range(value):
        return None, f"= {_show(name, value)} is out of range (must be {rule.range_text()})"
    return value, None


def _check_table(name: str, value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, Mapping):
        return None, f"must be a table, got {_toml_type(value)} {_show(name, value)}"
    bad = [
        f"{alias!r} must be a non-empty string path, got {_toml_type(target)} {_show(name, target)}"
        for alias, target in value.items()
        if not isinstance(target, str) or not target.strip()
    ]
    if bad:
        return None, "entry " + ", entry ".join(bad)
    return {str(alias): target for alias, target in value.items()}, None


# --- helpers --------------------------------------------------------------------------------------


def _is_secret(name: str) -> bool:
    """api_key, apikey, hf_token, auth_token_file, client_secret: yes. max_tokens (a count): no.

    A plain substring test would mask `max_tokens`; instead a secret is a name with a `_` part
    that ends in key/token/secret/password (singular), which no count or size setting has.
    """
    return any(part.endswith(_SECRET_WORDS) for part in name.lower().split("_"))


def _show(name: str, value: Any) -> str:
    """A value for an error message: short, one line, masked for secret settings."""
    if _is_secret(name):
        return _MASK
    text = _literal(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _literal(value: Any) -> str:
    """A value written as in TOML: strings double-quoted (escaped, so one line), None as none."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return f'"{escaped}"'
    return _flatten(repr(value))


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    labels = ((int, "integer"), (float, "float"), (str, "string"), (Mapping, "table"), (list, "array"))
    for kind, label in labels:
        if isinstance(value, kind):
            return label
    return type(value).__name__  # dates and times


def _suggest(word: str, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word.lower(), options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _flatten(text: str) -> str:
    return " ".join(text.split())
