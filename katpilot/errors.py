"""One errors module: every failure a user can cause carries a one-line message and its fix.

Front ends render these their own way (CLI: one stderr line and exit code 2; server: an OpenAI-style
JSON error; TUI: a notice; LSP: an error response). Nothing else in the code base should invent
user-facing error text.
"""

from __future__ import annotations


class KatpilotError(Exception):
    """A problem the user can fix: `message` says what is wrong, `fix` what to do about it."""

    exit_code = 2

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        """The message and its fix on one line, as every front end shows it."""
        text = self.message if not self.fix else f"{self.message} (fix: {self.fix})"
        return " ".join(text.split())


class ModelFileError(KatpilotError):
    """A model file is missing, not a GGUF, truncated, or of a kind llama.cpp cannot run."""


class ConfigError(KatpilotError):
    """A config file, environment variable or flag has a bad name or value."""


class ContextOverflowError(KatpilotError):
    """The prompt does not fit in the model's context window even after trimming old turns."""


class EngineError(KatpilotError):
    """The inference engine failed (llama.cpp error, remote server error)."""
