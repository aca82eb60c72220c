"""Where katpilot keeps its state: one directory per kind, all under KATPILOT_HOME when it is set."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "katpilot"
HOME_ENV = "KATPILOT_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    """Directory of `config.toml`."""
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Directory of history databases and other user data."""
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def models_dir() -> Path:
    """katpilot's own model store: the GGUFs `katpilot train run` registers by name."""
    return data_dir() / "models"


def cache_dir() -> Path:
    """Directory of rebuildable caches (repository index, downloads never)."""
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def config_file() -> Path:
    """The user's config file (may not exist)."""
    return config_dir() / "config.toml"
