"""The remote model setting, `openai+http://host:port/v1#model-id`, and the API key that goes with it.

Pure parsing, no I/O and no HTTP: `models.py` asks `is_remote` for every --model value, so this
must stay cheap to import (the client and the engine load only when a server is really used).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from katpilot.errors import KatpilotError

SCHEMES = ("openai+http://", "openai+https://")
KEY_FIX = "set api_key in the config file, or KATPILOT_API_KEY / OPENAI_API_KEY"
_FORMAT_FIX = "use openai+http://host:port/v1#model-name"


def is_remote(spec: str | None) -> bool:
    """Whether a --model value names a server rather than a file."""
    return spec is not None and spec.startswith(SCHEMES)


@dataclass(frozen=True)
class RemoteSpec:
    """`openai+http://host:port/v1#model-name`, taken apart."""

    base_url: str  # http(s)://host:port/v1, no trailing slash
    model: str | None  # the served model's id; None = the server's first

    @property
    def root(self) -> str:
        """The server's root, where non-OpenAI extras live (`/props`, `/tokenize`)."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url


def parse_spec(spec: str) -> RemoteSpec:
    """Parse a remote --model value; a malformed one is a one-line error.

    Credentials in the URL are refused: the URL is shown in messages and `config show`, the key
    is not (it travels only in the Authorization header).
    """
    if not is_remote(spec):
        raise KatpilotError(f"not a remote model: {spec}", _FORMAT_FIX)
    url, _, model = spec[len("openai+") :].partition("#")
    parts = urlsplit(url)
    if not parts.hostname:
        raise KatpilotError(f"no host in the remote model {spec}", _FORMAT_FIX)
    if parts.username or parts.password:
        raise KatpilotError("the remote model URL must not carry credentials", f"remove them from --model; {KEY_FIX}")
    try:
        parts.port  # noqa: B018 -- urllib checks the port only when it is read
    except ValueError:
        raise KatpilotError(
            f"the port in the remote model {spec} is not a number from 0 to 65535", _FORMAT_FIX
        ) from None
    return RemoteSpec(url.rstrip("/"), model or None)


def api_key_from(setting: str | None) -> str | None:
    """The configured key (config/KATPILOT_API_KEY via settings), else OPENAI_API_KEY."""
    return setting or os.environ.get("OPENAI_API_KEY") or None
