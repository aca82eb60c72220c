"""The repository index: tree-sitter definitions, references, ranking and secret withholding."""

from katpilot.index.parse import Definition
from katpilot.index.repo import RefreshReport, RepoIndex, Snippet, WorkspaceText

__all__ = ["Definition", "RefreshReport", "RepoIndex", "Snippet", "WorkspaceText"]
