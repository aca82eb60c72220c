"""Chat history: SQLite in WAL mode under the user's data directory.

Every message is committed the moment it completes (and a partial answer when a generation is
stopped), so killing the process loses nothing that was shown complete: a committed WAL
transaction survives the process. The schema grows by numbered migrations (`m001_...`), applied in
order and counted in `PRAGMA user_version`. A file that is not a katpilot history (corrupt, or
another program's database) is moved aside, never deleted, and a fresh one started, with a notice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from katpilot import paths
from katpilot.chat_template import Message
from katpilot.errors import KatpilotError

APPLICATION_ID = 0x4B415450  # "KATP": marks the file as ours
HISTORY_FILE = "history.sqlite"
TITLE_CHARS = 60


class HistoryError(KatpilotError):
    """The history database cannot be written (disk full, read-only, ...)."""


def m001_initial(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        CREATE TABLE chats (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            model TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            judge TEXT NOT NULL DEFAULT '',
            think TEXT NOT NULL DEFAULT '',
            mode TEXT,
            decided_by TEXT,
            p_on REAL,
            stats TEXT,
            partial INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        );
        CREATE INDEX messages_by_chat ON messages(chat_id, id);
        """
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial]


@dataclass(frozen=True)
class ChatSummary:
    id: int
    title: str
    model: str
    created_at: float
    updated_at: float
    messages: int


@dataclass(frozen=True)
class StoredMessage:
    id: int
    chat_id: int
    role: str
    content: str
    judge: str = ""
    think: str = ""
    mode: str | None = None
    decided_by: str | None = None
    p_on: float | None = None
    stats: dict[str, object] = field(default_factory=dict)
    partial: bool = False
    created_at: float = 0.0


def default_history_path() -> Path:
    return paths.data_dir() / HISTORY_FILE


class History:
    """The chats and their messages."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_history_path()
        self.notices: list[str] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._open()
        except (OSError, sqlite3.DatabaseError) as exc:
            raise HistoryError(
                f"cannot open the chat history {self.path} ({exc})",
                "make its directory writable, or set KATPILOT_HOME to a writable directory",
            ) from None

    # -- opening ----------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect_and_migrate()
        except sqlite3.DatabaseError as exc:  # not a database, or another program's
            aside = self._move_aside()
            self.notices.append(f"the chat history was unreadable ({exc}); moved it to {aside} and started a new one")
            return self._connect_and_migrate()

    def _connect_and_migrate(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if app_id != APPLICATION_ID and tables:
                raise sqlite3.DatabaseError("it is another program's database")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a killed process
            self._migrate(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise HistoryError(
                f"the chat history was written by a newer katpilot (schema {version}, this one knows {len(MIGRATIONS)})",
                "upgrade katpilot, or point KATPILOT_HOME elsewhere",
            )
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with db:
                migration(db)
                db.execute(f"PRAGMA user_version = {number}")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _move_aside(self) -> Path:
        aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        self.path.rename(aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return aside

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        try:
            with self.db:
                return self.db.execute(sql, args).lastrowid or 0
        except sqlite3.OperationalError as exc:
            raise HistoryError(
                f"could not save to the chat history {self.path} ({exc})", "free disk space or check permissions"
            ) from None

    def new_chat(self, model: str, title: str = "") -> int:
        now = time.time()
        return self._write(
            "INSERT INTO chats (title, model, created_at, updated_at) VALUES (?, ?, ?, ?)", (title, model, now, now)
        )

    def add_message(
        self,
        chat_id: int,
        role: str,
        content: str,
        *,
        judge: str = "",
        think: str = "",
        mode: str | None = None,
        decided_by: str | None = None,
        p_on: float | None = None,
        stats: dict[str, object] | None = None,
        partial: bool = False,
    ) -> int:
        """Store one completed message (or a stopped answer with `partial=True`) and commit it."""
        now = time.time()
        message_id = self._write(
            "INSERT INTO messages (chat_id, role, content, judge, think, mode, decided_by, p_on, stats, partial, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (chat_id, role, content, judge, think, mode, decided_by, p_on, json.dumps(stats or {}), int(partial), now),
        )
        title = " ".join(content.split())[:TITLE_CHARS] if role == "user" else ""
        self._write(
            "UPDATE chats SET updated_at = ?, title = CASE WHEN title = '' AND ? != '' THEN ? ELSE title END WHERE id = ?",
            (now, title, title, chat_id),
        )
        return message_id

    # -- reading ----------------------------------------------------------------------------------

    def chats(self, limit: int = 50) -> list[ChatSummary]:
        """The most recently used chats first."""
        rows = self.db.execute(
            "SELECT c.id, c.title, c.model, c.created_at, c.updated_at, COUNT(m.id) FROM chats c"
            " LEFT JOIN messages m ON m.chat_id = c.id GROUP BY c.id ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            (limit,),
        )
        return [ChatSummary(*row) for row in rows]

    def last_chat_id(self) -> int | None:
        row = self.db.execute("SELECT id FROM chats ORDER BY updated_at DESC, id DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def resolve_chat(self, ref: str) -> int:
        """The chat a `--resume` value names: "last" (the most recently used) or a chat's ID.

        The rule lives here, beside the chats it reads, so every front end resolves a reference
        the same way and a bad one is refused with the same message.
        """
        if ref == "last":
            chat_id = self.last_chat_id()
            if chat_id is None:
                raise KatpilotError("there is no chat to resume yet", "start one with `katpilot chat`")
            return chat_id
        if ref.isdigit():
            return self.chat(int(ref)).id
        raise KatpilotError(f"--resume takes a chat ID or 'last', not '{ref}'", "see `katpilot history`")

    def chat(self, chat_id: int) -> ChatSummary:
        found = [c for c in self.chats(limit=-1) if c.id == chat_id]
        if not found:
            raise HistoryError(
                f"there is no chat {chat_id} in the history", "see `katpilot history` for the chats there are"
            )
        return found[0]

    def messages(self, chat_id: int) -> list[StoredMessage]:
        rows = self.db.execute(
            "SELECT id, chat_id, role, content, judge, think, mode, decided_by, p_on, stats, partial, created_at"
            " FROM messages WHERE chat_id = ? ORDER BY id",
            (chat_id,),
        )
        return [
            StoredMessage(
                id=row[0],
                chat_id=row[1],
                role=row[2],
                content=row[3],
                judge=row[4],
                think=row[5],
                mode=row[6],
                decided_by=row[7],
                p_on=row[8],
                stats=json.loads(row[9] or "{}"),
                partial=bool(row[10]),
                created_at=row[11],
            )
            for row in rows
        ]

    def conversation(self, chat_id: int) -> list[Message]:
        """The chat as session history: user turns and the answers (never the thinking)."""
        return [
            Message("user" if m.role == "user" else "assistant", m.content)
            for m in self.messages(chat_id)
            if m.role in ("user", "assistant")
        ]

    def export_markdown(self, chat_id: int) -> str:
        """The chat as Markdown: questions, answers, and the thinking in collapsible blocks."""
        chat = self.chat(chat_id)
        lines = [f"# {chat.title or 'Chat'}", "", f"model: {chat.model}", ""]
        for m in self.messages(chat_id):
            if m.role == "user":
                lines += ["## You", "", m.content, ""]
                continue
            badge = f"think {m.mode}" if m.mode else ""
            if m.decided_by == "none":  # gate.NO_DECISION: a plain model, nobody chose the mode
                badge += " (no decision)"
            elif m.decided_by:
                badge += f" ({m.decided_by}" + (f", p(on)={m.p_on:.2f}" if m.p_on is not None else "") + ")"
            lines += [f"## katpilot{' · ' + badge if badge else ''}{' · stopped' if m.partial else ''}", ""]
            if m.judge or m.think:
                inner = "\n\n".join(part for part in (m.judge, m.think) if part)
                lines += ["<details><summary>thinking</summary>", "", inner, "", "</details>", ""]
            lines += [m.content, ""]
        return "\n".join(lines)
