"""The repository index: tree-sitter definitions, references, ranking and secret withholding.

The names below are imported on first use, so that a worker process that only parses (see
`indexer`) does not load the ranking's and the store's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from katpilot.index.parse import Definition
    from katpilot.index.repo import RefreshReport, RepoIndex, RepoIndexError, Snippet, WorkspaceText

__all__ = ["Definition", "RefreshReport", "RepoIndex", "RepoIndexError", "Snippet", "WorkspaceText"]

_HOMES = {
    "Definition": "parse",
    "RefreshReport": "repo",
    "RepoIndex": "repo",
    "RepoIndexError": "repo",
    "Snippet": "repo",
    "WorkspaceText": "repo",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
