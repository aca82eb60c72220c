"""RepoIndex: the one repository index that chat, LSP and the trainer share.

Build or refresh it (`refresh`), then ask it for the ranked repo map, the definition enclosing a
position, the definitions used near a position, the snippets most relevant to a question, or a
workspace file's text. Everything it returns comes from redacted text (see `secrets`), and paths
outside the root are refused.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from katpilot.errors import KatpilotError
from katpilot.index import rank
from katpilot.index.build import index_into
from katpilot.index.indexer import decode_source
from katpilot.index.languages import language_for, line_comment
from katpilot.index.parse import Definition, extract_definitions, parse_tree, references_in
from katpilot.index.search import DefinitionSearch
from katpilot.index.secrets import is_secret_file
from katpilot.index.store import IndexStore, default_cache_path
from katpilot.index.walk import DEFAULT_MAX_FILE_BYTES, SourceFile, walk
from katpilot.terms import estimate_tokens

NEAR_RADIUS_LINES = 15  # "near the cursor": this many lines above and below
SNIPPET_MAX_LINES = 40


class RepoIndexError(KatpilotError):
    """A request the index cannot serve (a path outside the workspace, a credential file, ...).

    Named for what it is: the old name, `IndexError_`, read as a variant of the built-in IndexError.
    """


@dataclass
class RefreshReport:
    """What one refresh did; `parsed` counts files whose content changed (or was new)."""

    files: int = 0
    parsed: int = 0
    unchanged: int = 0
    removed: int = 0
    definitions: int = 0
    withheld_files: int = 0
    withheld_lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cache_path: str = ""
    notices: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{self.files} files ({self.parsed} parsed, {self.unchanged} unchanged, {self.removed} removed)",
            f"{self.definitions} definitions",
            f"withheld {self.withheld_files} credential file(s) and {self.withheld_lines} secret-looking line(s)",
        ]
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        parts.append(f"{self.seconds:.2f} s")
        return " · ".join(parts)


@dataclass(frozen=True)
class Snippet:
    """A definition's source, as the index may show it."""

    definition: Definition
    text: str
    score: float


@dataclass(frozen=True)
class WorkspaceText:
    path: str
    text: str
    withheld_lines: int


class RepoIndex:
    """The index of one repository (a directory), cached in SQLite between runs."""

    def __init__(
        self,
        root: str | Path,
        cache_path: Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        exclude: Iterable[str] = (),
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise RepoIndexError(f"{root} is not a directory", "give the repository's root directory")
        self.max_file_bytes = max_file_bytes
        self.exclude = tuple(exclude)
        self.store = IndexStore(cache_path or default_cache_path(self.root), self.root)
        self.secret_files: list[str] = []
        self._fresh = False
        self._by_path: dict[str, list[Definition]] | None = None
        self._by_name: dict[str, list[Definition]] = {}
        self._search: DefinitionSearch | None = None

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> RepoIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ---------------------------------------------------------------------------------

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> RefreshReport:
        """Bring the cache up to date with the tree: only new or changed files are parsed."""
        started = time.perf_counter()
        report = RefreshReport(cache_path=str(self.store.path), notices=list(self.store.notices))
        self.store.notices.clear()
        walked = walk(self.root, self.max_file_bytes, self.exclude)
        stored = self.store.files()
        to_parse: list[SourceFile] = []
        touched: list[tuple[str, int, int]] = []
        for source in walked.files:
            old = stored.get(source.path)
            if old is None or old.language != source.language:
                to_parse.append(source)
            elif (old.size, old.mtime_ns) == (source.size, source.mtime_ns):
                report.unchanged += 1
            elif self._same_content(source, old.sha1):
                touched.append((source.path, source.size, source.mtime_ns))
                report.unchanged += 1
            else:
                to_parse.append(source)
        removed = sorted(set(stored) - {s.path for s in walked.files})

        done = 0
        total = len(to_parse)
        if progress:
            progress(0, total)

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        self.store.write([], touched, removed)
        index_into(self.store, self.root, to_parse, advance)

        self.secret_files = walked.secret_files
        self._fresh = True
        self._by_path = None
        self._search = None
        files = self.store.files()
        report.files = len(files)
        report.parsed = total
        report.removed = len(removed)
        report.definitions = self.store.definition_count()
        report.withheld_files = len(self.secret_files)
        report.withheld_lines = sum(f.withheld_lines for f in files.values())
        skipped = Counter(walked.skipped)
        skipped.update(f.status for f in files.values() if f.status != "indexed")
        report.skipped = dict(skipped)
        report.seconds = time.perf_counter() - started
        return report

    def _same_content(self, source: SourceFile, sha1: str) -> bool:
        try:
            return hashlib.sha1((self.root / source.path).read_bytes()).hexdigest() == sha1
        except OSError:
            return False

    def _ensure_fresh(self) -> None:
        if not self._fresh:
            self.refresh()

    # -- paths ------------------------------------------------------------------------------------

    def relative(self, path: str | Path) -> str:
        """A path as the index names it (relative to the root); paths outside the root are refused."""
        candidate = Path(path).expanduser()
        full = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if not full.is_relative_to(self.root):
            raise RepoIndexError(
                f"{path} is outside the workspace {self.root}", "only files inside the workspace can be used"
            )
        return full.relative_to(self.root).as_posix()

    def resolve_focus(self, items: Iterable[str]) -> tuple[list[str], list[str]]:
        """`--focus` values as (files, names) for `repo_map`: a file path, else a defined name.

        A file is named from the current directory or from the root. Anything that is neither is
        refused, so a typo fails loudly instead of giving a map with no focus.
        """
        files: list[str] = []
        names: list[str] = []
        for item in items:
            found = next((p for p in (Path(item).expanduser().resolve(), self.root / item) if p.is_file()), None)
            if found is not None:
                files.append(str(found))
            elif self.definitions(name=item):
                names.append(item)
            else:
                raise RepoIndexError(
                    f"--focus {item} is neither a file nor a defined name", "give a file path or a function/class name"
                )
        return files, names

    # -- lookups ----------------------------------------------------------------------------------

    def _definitions_by_path(self) -> dict[str, list[Definition]]:
        """The cache's definitions, loaded once per refresh and looked up in memory."""
        if self._by_path is None:
            self._by_path = self.store.definitions()
            self._by_name = {}
            for defs in self._by_path.values():
                for d in defs:
                    self._by_name.setdefault(d.name, []).append(d)
        return self._by_path

    def definitions(self, path: str | Path | None = None, name: str | None = None) -> list[Definition]:
        """Definitions of one file, or of one name across the repository, or all of them."""
        self._ensure_fresh()
        by_path = self._definitions_by_path()
        if path is not None:
            return list(by_path.get(self.relative(path), []))
        if name is not None:
            return list(self._by_name.get(name, []))
        return [d for path_ in sorted(by_path) for d in by_path[path_]]

    def references(self, name: str) -> dict[str, int]:
        """Files that use a name, with how often (lexical count: code, comments and strings)."""
        self._ensure_fresh()
        return {path: counts[name] for path, counts in self.store.reference_counts() if name in counts}

    def enclosing_definition(
        self, path: str | Path, row: int, column: int = 0, text: str | None = None
    ) -> Definition | None:
        """The innermost definition containing a position; `text` is the editor's unsaved copy."""
        rel = self.relative(path)
        if text is None:
            candidates = self.definitions(path=rel)
        else:
            candidates = self._parse_text(rel, text)
        inside = [d for d in candidates if d.contains(row, column)]
        return max(inside, key=lambda d: d.start, default=None)

    def definitions_near(
        self, path: str | Path, row: int, text: str | None = None, radius: int = NEAR_RADIUS_LINES, limit: int = 8
    ) -> list[Definition]:
        """Definitions (anywhere in the repository) of the names used within `radius` lines of a row.

        The most used names come first; definitions inside the window itself are left out (the
        caller already shows those lines).
        """
        rel = self.relative(path)
        language = language_for(rel)
        if language is None:
            return []
        source = self._source_text(rel, text)
        refs = references_in(language, source.encode("utf-8"), row - radius, row + radius)
        counts = Counter(r.name for r in refs)
        found: list[Definition] = []
        for name, _count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            found += [
                d
                for d in self.definitions(name=name)
                if not (d.path == rel and row - radius <= d.start[0] <= row + radius)
            ]
            if len(found) >= limit:
                break
        return found[:limit]

    def search(self, question: str, limit: int = 5) -> list[Snippet]:
        """The definitions most relevant to a question (BM25 over their words), with their source."""
        if self._search is None:
            self._search = DefinitionSearch(self.definitions())
        return [
            Snippet(hit.definition, self.excerpt(hit.definition), hit.score)
            for hit in self._search.search(question, limit)
        ]

    def repo_map(
        self,
        max_tokens: int = 1024,
        focus_files: Iterable[str | Path] = (),
        focus_names: Iterable[str] = (),
        exclude_files: Iterable[str | Path] = (),
        count_tokens: Callable[[str], int] | None = None,
    ) -> str:
        """The ranked map of the repository's definitions that fits in `max_tokens`."""
        ranked = rank.rank_definitions(
            self.definitions(),
            self.store.reference_counts(),
            focus_files=[self.relative(f) for f in focus_files],
            focus_names=focus_names,
        )
        return rank.render_map(
            ranked, max_tokens, count_tokens or estimate_tokens, [self.relative(f) for f in exclude_files]
        )

    def read_text(self, path: str | Path) -> WorkspaceText:
        """A workspace file's text with secrets withheld (what `/add` attaches)."""
        rel = self.relative(path)
        full = self.root / rel
        if is_secret_file(rel):
            raise RepoIndexError(f"{rel} is a credential file; katpilot never reads it", "attach a different file")
        if not full.is_file():
            raise RepoIndexError(f"{rel} is not a file in the workspace", "check the path")
        size = full.stat().st_size
        if size > self.max_file_bytes:
            raise RepoIndexError(
                f"{rel} is {size} bytes, over the {self.max_file_bytes}-byte limit",
                "attach a smaller file or a part of it",
            )
        decoded = decode_source(full.read_bytes(), line_comment(rel))
        if decoded.status == "binary":
            raise RepoIndexError(f"{rel} is a binary file", "attach a text file")
        return WorkspaceText(rel, decoded.text, decoded.withheld_lines)

    def documents(self) -> Iterator[WorkspaceText]:
        """Every indexed file's redacted text: the trainer's view of the repository."""
        self._ensure_fresh()
        for path, stored in sorted(self.store.files().items()):
            if stored.status == "indexed":
                try:
                    yield self.read_text(path)
                except KatpilotError:
                    continue  # vanished or grew since the refresh

    # -- helpers ----------------------------------------------------------------------------------

    def _source_text(self, rel: str, text: str | None) -> str:
        if text is not None:
            return decode_source(text.encode("utf-8"), line_comment(rel)).text  # an editor buffer is redacted too
        return self.read_text(rel).text

    def _parse_text(self, rel: str, text: str) -> list[Definition]:
        language = language_for(rel)
        if language is None:
            return []
        source = self._source_text(rel, text).encode("utf-8")
        return extract_definitions(language, rel, source, parse_tree(language, source))

    def excerpt(self, definition: Definition) -> str:
        """A definition's source as shown to a model: its first SNIPPET_MAX_LINES lines, secrets withheld."""
        try:
            lines = self.read_text(definition.path).text.splitlines()
        except KatpilotError:
            return definition.signature
        first, last = definition.start[0], min(definition.end[0], definition.start[0] + SNIPPET_MAX_LINES - 1)
        excerpt = "\n".join(lines[first : last + 1])
        if last < definition.end[0]:
            excerpt += f"\n… ({definition.end[0] - last} more lines)"
        return excerpt
