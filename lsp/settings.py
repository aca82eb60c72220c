"""The language server's settings: katpilot's own settings plus a few that only an editor needs.

They start from the resolved config (file, environment, `katpilot lsp` flags) and are updated by
the client's `initializationOptions` and `workspace/didChangeConfiguration`. Either may nest them
under a "katpilot" key; without one, objects beside our keys are taken for other servers' sections
(editors such as Eglot send one settings object to every server) and left alone. Any katpilot setting is accepted (model, think, threshold, budget,
max_tokens, temperature, ...), checked by the same rules as the config file; a bad value is
reported and ignored, the rest still applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from katpilot.config import SETTING_NAMES, Settings, check_value

# Settings of the editor integration alone: name -> (default, minimum, description).
LSP_ONLY: dict[str, tuple[int, int, str]] = {
    "debounce_ms": (150, 0, "wait this long after a completion request; a newer one replaces it"),
    "completion_max_tokens": (48, 1, "max tokens of an inline completion"),
    "max_file_bytes": (1_000_000, 1, "documents larger than this are refused, with a message"),
}
# Settings whose change needs the model loaded again.
RELOAD_KEYS = frozenset({"model", "n_ctx", "n_threads", "api_key", "remote_gguf", "models"})


@dataclass(frozen=True)
class LspSettings:
    """Everything the server reads when it handles a request."""

    base: Settings
    debounce_ms: int = LSP_ONLY["debounce_ms"][0]
    completion_max_tokens: int = LSP_ONLY["completion_max_tokens"][0]
    max_file_bytes: int = LSP_ONLY["max_file_bytes"][0]
    # A second model for inline completion (a FIM-capable code model); None = the main model.
    completion_model: str | None = None

    def completion_settings(self) -> Settings:
        """The settings the completion engine loads: the main ones with the completion model."""
        if self.completion_model is None:
            return self.base
        return replace(self.base, model=self.completion_model)


def apply_options(current: LspSettings, options: Any) -> tuple[LspSettings, list[str], bool]:
    """The settings with the client's options applied, the problems found, and whether to reload.

    Unknown keys and bad values are problems (one message each, naming the key and the rule);
    they are skipped and everything else applies.
    """
    if not isinstance(options, Mapping):
        return (
            current,
            ([] if options is None else [f"settings must be an object, got {type(options).__name__}"]),
            False,
        )
    nested = isinstance(options.get("katpilot"), Mapping)
    if nested:
        options = options["katpilot"]
    base_changes: dict[str, Any] = {}
    own_changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in options.items():
        if key == "completion_model":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                problems.append(
                    f"setting completion_model must be a model (path, [models] name or server URL) or null, got {value!r}"
                )
            else:
                own_changes[key] = value or None
        elif key in LSP_ONLY:
            _default, minimum, _text = LSP_ONLY[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                problems.append(f"setting {key} must be an integer >= {minimum}, got {value!r}")
            else:
                own_changes[key] = value
        elif key in SETTING_NAMES:
            checked, problem = check_value(key, value)
            if problem:
                problems.append(f"setting {key} {problem}")
            else:
                base_changes[key] = checked
        elif nested or not isinstance(value, Mapping):  # flat: objects are other servers' sections
            problems.append(f"unknown setting {key!r}: see the editor guide (docs/lsp.md) for the list")
    reload = any(key in RELOAD_KEYS and getattr(current.base, key) != value for key, value in base_changes.items())
    updated = replace(current, base=replace(current.base, **base_changes), **own_changes)
    return updated, problems, reload
