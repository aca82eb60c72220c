"""The index's on-disk cache: one SQLite file per repository, keyed by path and content hash.

It is a cache: anything wrong with it (corrupt, another program's database, an older format,
another repository's) is answered by starting a fresh one, with a notice, never by failing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from katpilot import paths
from katpilot.errors import KatpilotError
from katpilot.index.indexer import FileRecord
from katpilot.index.lexical import unpack
from katpilot.index.parse import Definition, definitions_from_json

FORMAT = "katpilot-index"
# Bump when what a record holds changes (parsing, redaction rules): old caches are rebuilt.
VERSION = "3"

# One row per file. Definitions (JSON) and reference counts (`lexical.count_words`) are in the
# row: a refresh writes a few thousand rows instead of a hundred thousand, and lookups run on the
# in-memory copy.
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    path TEXT PRIMARY KEY, language TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha1 TEXT NOT NULL, status TEXT NOT NULL, withheld_lines INTEGER NOT NULL,
    def_count INTEGER NOT NULL, defs TEXT NOT NULL, ref_words TEXT NOT NULL, ref_counts BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class StoredFile:
    path: str
    language: str
    size: int
    mtime_ns: int
    sha1: str
    status: str
    withheld_lines: int


def default_cache_path(root: Path) -> Path:
    """Where a repository's cache lives: under the user's cache directory, named by its path."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return paths.cache_dir() / "index" / f"{root.resolve().name or 'root'}-{digest}.sqlite"


class IndexStore:
    """Files, definitions and reference counts of one repository."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = str(root.resolve())
        self.notices: list[str] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.db = self._open()
            except sqlite3.DatabaseError as exc:
                self.notices.append(f"the index cache {path} was unreadable ({exc}); started a fresh one")
                self._remove()
                self.db = self._open()
        except (OSError, sqlite3.DatabaseError) as exc:
            raise KatpilotError(
                f"cannot write the index cache {path} ({exc})",
                "make its directory writable, or set KATPILOT_HOME to a writable directory",
            ) from None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            problem = self._problem(db)
            if problem == "empty":
                self._create(db)
            elif problem:
                db.close()
                self.notices.append(f"the index cache {self.path} {problem}; rebuilt it")
                self._remove()
                db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                self._create(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _problem(self, db: sqlite3.Connection) -> str | None:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return "empty"
        if "meta" not in tables:
            return "belongs to another program"
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            return "belongs to another program"
        if meta.get("version") != VERSION:
            return f"had format version {meta.get('version')} (this katpilot writes {VERSION})"
        if meta.get("root") != self.root:
            return f"belonged to another repository ({meta.get('root')})"
        return None

    def _create(self, db: sqlite3.Connection) -> None:
        with db:
            db.executescript(_SCHEMA)
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("version", VERSION), ("root", self.root)]
            )

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self.db.close()

    # -- reading ----------------------------------------------------------------------------------

    def files(self) -> dict[str, StoredFile]:
        rows = self.db.execute("SELECT path, language, size, mtime_ns, sha1, status, withheld_lines FROM files")
        return {row[0]: StoredFile(*row) for row in rows}

    def definitions(self) -> dict[str, list[Definition]]:
        """Every file's definitions, in order of position."""
        rows = self.db.execute("SELECT path, defs FROM files WHERE status = 'indexed'")
        return {path: definitions_from_json(path, blob) for path, blob in rows}

    def definition_count(self) -> int:
        count: int = self.db.execute("SELECT COALESCE(SUM(def_count), 0) FROM files").fetchone()[0]
        return count

    def reference_counts(self) -> Iterator[tuple[str, dict[str, int]]]:
        """(path, {name: count}) for every indexed file."""
        for path, words, counts in self.db.execute(
            "SELECT path, ref_words, ref_counts FROM files WHERE status = 'indexed'"
        ):
            yield path, unpack(words, counts)

    # -- writing ----------------------------------------------------------------------------------

    def write(
        self,
        records: Iterable[FileRecord],
        touched: Iterable[tuple[str, int, int]] = (),
        removed: Iterable[str] = (),
    ) -> None:
        """Store parsed files, new stat data of unchanged ones, and forget removed ones: one transaction."""
        with self.db:
            self.db.executemany("DELETE FROM files WHERE path = ?", [(path,) for path in removed])
            self.db.executemany(
                "UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", [(s, m, p) for p, s, m in touched]
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.source.path,
                        r.source.language,
                        r.source.size,
                        r.source.mtime_ns,
                        r.sha1,
                        r.status,
                        r.withheld_lines,
                        r.definition_count,
                        r.definitions,
                        r.ref_words,
                        r.ref_counts,
                    )
                    for r in records
                ],
            )
