"""Which files of a repository the index looks at.

Honours `.gitignore` files at every level (a deeper file's rules win, `!` re-includes), the root's
`.git/info/exclude`, `.katpilotignore` files (read after `.gitignore` at the same level, so they
can both add and re-include) and extra patterns from the caller. Skips vendored and generated
trees by directory name, credential files by name (counted as withheld: never opened), files over
a size limit, and symlinks that leave the root. Binary and generated content is found later, when
a file is read (`indexer.index_file`).
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from katpilot.index.languages import language_for
from katpilot.index.secrets import is_secret_file

DEFAULT_MAX_FILE_BYTES = 1 << 20  # 1 MiB: larger source files are almost always generated or data

# Directories never walked below the root: version control, caches, virtual environments,
# dependency and build output trees.
SKIPPED_DIRECTORIES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        ".jj",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        ".eggs",
        "site-packages",
        "dist-packages",
        "node_modules",
        "bower_components",
        "jspm_packages",
        ".yarn",
        ".pnpm-store",
        "vendor",
        "third_party",
        "third-party",
        "thirdparty",
        "external",
        "Pods",
        "Carthage",
        "dist",
        "build",
        "target",
        "out",
        ".next",
        ".nuxt",
        ".gradle",
        ".idea",
        ".vs",
        "cmake-build-debug",
    }
)
IGNORE_FILES = (".gitignore", ".katpilotignore")


@dataclass(frozen=True)
class SourceFile:
    """A file the index will parse."""

    path: str  # relative to the root, forward slashes
    language: str
    size: int
    mtime_ns: int


@dataclass
class WalkResult:
    files: list[SourceFile] = field(default_factory=list)
    secret_files: list[str] = field(default_factory=list)  # withheld by name, never read
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count


@dataclass(frozen=True)
class _Rules:
    base: str  # directory of the ignore file, relative to the root ("" for the root)
    spec: pathspec.GitIgnoreSpec


class IgnoreRules:
    """The stack of ignore files that apply to a directory."""

    def __init__(self, rules: tuple[_Rules, ...] = ()) -> None:
        self.rules = rules

    def below(self, directory: Path, rel_dir: str, extra: tuple[str, ...] = ()) -> IgnoreRules:
        """The rules inside `directory`: these plus its own ignore files."""
        added = []
        if extra:
            added.append(_Rules(rel_dir, pathspec.GitIgnoreSpec.from_lines(extra)))
        for name in IGNORE_FILES:
            lines = _read_lines(directory / name)
            if lines:
                added.append(_Rules(rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))
        return IgnoreRules(self.rules + tuple(added)) if added else self

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        verdict = False
        for rule in self.rules:
            local = rel_path[len(rule.base) + 1 :] if rule.base else rel_path
            result = rule.spec.check_file(local + "/" if is_dir else local)
            if result.include is not None:
                verdict = result.include
        return verdict


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def walk(root: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, exclude: tuple[str, ...] = ()) -> WalkResult:
    """Every parseable file under `root`, in a stable order, and what was left out and why."""
    root = root.resolve()
    result = WalkResult()
    root_extra = tuple(exclude) + tuple(_read_lines(root / ".git" / "info" / "exclude"))
    pending: list[tuple[Path, str, IgnoreRules]] = [(root, "", IgnoreRules().below(root, "", root_extra))]
    while pending:
        directory, rel_dir, rules = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError:
            result.skipped["unreadable"] += 1
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    target = Path(entry.path).resolve()
                    if not target.is_relative_to(root) or target.is_dir():
                        result.skipped["symlink"] += 1
                        continue
                    info = entry.stat()
            except OSError:
                result.skipped["unreadable"] += 1
                continue
            if stat.S_ISDIR(info.st_mode):
                if entry.name in SKIPPED_DIRECTORIES:
                    result.skipped["vendored or build directory"] += 1
                elif rules.ignored(rel, is_dir=True):
                    result.skipped["ignored"] += 1
                else:
                    pending.append((Path(entry.path), rel, rules.below(Path(entry.path), rel)))
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if rules.ignored(rel, is_dir=False):
                result.skipped["ignored"] += 1
            elif is_secret_file(entry.name):
                result.secret_files.append(rel)
            elif (language := language_for(entry.name)) is None:
                result.skipped["not a supported language"] += 1
            elif info.st_size > max_file_bytes:
                result.skipped["over the size limit"] += 1
            else:
                result.files.append(SourceFile(rel, language, info.st_size, info.st_mtime_ns))
    result.files.sort(key=lambda f: f.path)
    result.secret_files.sort()
    return result
