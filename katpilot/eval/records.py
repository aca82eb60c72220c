"""Per-item records and the run's journal on disk, which makes a killed run resumable.

The journal is `records.jsonl` in the output directory: one record per line, appended, flushed and
fsynced as each (item, condition) finishes, so a SIGKILL loses at most the line being written. A
rerun with the same `--out` reads it back (dropping a torn last line), skips what is there and
appends the rest. `run.json` holds what the records depend on (model, suite, sampling, ...): a rerun
that changes any of it is refused rather than mixing two runs in one report.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError

RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"


@dataclass
class Record:
    """What one item did under one condition."""

    item: str
    condition: str  # "on", "off", or "auto@<threshold>"
    think: str  # the requested mode: auto, on or off
    threshold: float | None  # auto only
    mode: str  # what the response did: on or off
    decided_by: str  # model, user or none (gate.DecidedBy)
    p_on: float | None
    tokens: dict[str, int]  # judge, think, answer, other, completion, prompt
    latency_s: float
    finish_reason: str
    passed: bool
    verifier: str
    reason: str | None
    answer: str
    reused_from: str | None = None  # the condition whose response this one is (same decision)
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(**data)


class RunJournal:
    """The output directory of one run: its fingerprint and its records, kept as they come."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.out = out
        if not (out / RUN_FILE).exists() and foreign_entries(out):
            raise KatpilotError(  # its report.md or results.json would be replaced
                f"{out} holds files and no katpilot evaluation", "give --out a new or empty directory"
            )
        make_output_dir(out)
        self.records: dict[tuple[str, str], Record] = {}
        self._by_item: dict[str, list[Record]] = {}
        check_fingerprint(out / RUN_FILE, fingerprint, out)
        self.resumed = self._load()
        self._file = DurableLog(out / RECORDS_FILE, out)
        self._lock = threading.Lock()  # --jobs workers add records concurrently

    def _load(self) -> int:
        """Read the journal back (a torn last line is cut off). Returns records read."""
        path = self.out / RECORDS_FILE
        for number, data in read_journal(path, self.out):
            try:
                record = Record.from_json(data)
                if not isinstance(record.tokens, dict) or "completion" not in record.tokens:
                    raise TypeError("its tokens have no completion count")
            except (TypeError, AttributeError) as exc:
                raise _not_a_record(path, number, exc, self.out) from None
            if (record.item, record.condition) not in self.records:
                self._keep(record)
        return len(self.records)

    def _keep(self, record: Record) -> None:
        self.records[(record.item, record.condition)] = record
        self._by_item.setdefault(record.item, []).append(record)

    def get(self, item: str, condition: str) -> Record | None:
        return self.records.get((item, condition))

    def for_item(self, item: str) -> list[Record]:
        with self._lock:
            return list(self._by_item.get(item, []))

    def add(self, record: Record) -> None:
        """Keep a record: in memory and on disk, durable before this returns."""
        with self._lock:
            self._keep(record)
            self._file.append([record.to_json()])

    def close(self) -> None:
        self._file.close()


# -- the parts any append-only journal needs (eval's records, the data stage's dataset) -----------


def foreign_entries(directory: Path, ours: frozenset[str] = frozenset()) -> list[str]:
    """The names in `directory` that are neither `ours` nor hidden (.DS_Store, our own unfinished
    writes): what an output directory holds of somebody else's, so a run must not take it over."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name not in ours and not p.name.startswith("."))


def make_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KatpilotError(
            f"cannot create the output directory {out} ({exc.strerror})", "give --out a writable path"
        ) from None


FORMAT_KEY = "journal_format"  # absent from the files of older katpilots, which kept other fields
DIGESTS = {  # fingerprint fields whose values say nothing to a reader: what a difference there means
    FORMAT_KEY: "records of an older katpilot, whose settings were kept differently",
    "suite_digest": "other items (another --seed, another suite file or repository of that name, or an edited one)",
    "model_digest": "another model file's answers (the model at that path has changed)",
}


def check_fingerprint(path: Path, fingerprint: dict[str, Any], out: Path) -> None:
    """Write the run's fingerprint, or refuse a rerun whose fingerprint differs (naming the setting)."""
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise KatpilotError(f"{path} is unreadable ({exc})", f"delete {out} or give another --out") from None
        if not isinstance(before, dict):
            raise KatpilotError(
                f"{path} is not a run's settings (not a JSON object)", f"delete {out} or give another --out"
            )
        changed = [k for k in sorted(set(before) | set(fingerprint)) if before.get(k) != fingerprint.get(k)]
        changed.sort(key=lambda k: (k != FORMAT_KEY, k in DIGESTS))  # the plain settings say more than digests
        if changed:
            name = changed[0]
            what = DIGESTS.get(name, f"another {name} ({before.get(name)!r}, now {fingerprint.get(name)!r})")
            raise KatpilotError(
                f"{out} holds a run with {what}", "give another --out, or delete that directory to start over"
            )
        return
    write_atomic(path, json.dumps(fingerprint, indent=2) + "\n")


def read_journal(path: Path, out: Path) -> list[tuple[int, dict[str, Any]]]:
    """A JSONL journal's objects with their line numbers; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
        good = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        if good < len(data):
            with path.open("r+b") as f:
                f.truncate(good)
    except OSError as exc:
        raise _unwritable(out, exc) from None
    rows = []
    for number, line in enumerate(data[:good].splitlines(), 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise TypeError("it is not a JSON object")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            raise _not_a_record(path, number, exc, out) from None
        rows.append((number, row))
    return rows


class DurableLog:
    """An append-only JSONL file: each `append` is on disk (flushed, fsynced) before it returns.

    Lines appended together go in one write, so a SIGKILL tears at most the last line, which
    `read_journal` cuts off.
    """

    def __init__(self, path: Path, out: Path) -> None:
        self.path, self.out = path, out
        try:
            self._file = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise _unwritable(out, exc) from None

    def append(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        try:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _unwritable(self.out, exc) from None

    def close(self) -> None:
        self._file.close()


def _not_a_record(path: Path, number: int, exc: Exception, out: Path) -> KatpilotError:
    return KatpilotError(f"{path} line {number} is not a record ({exc})", f"delete {out} or give another --out")


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: a write cut off leaves nothing that looks like a user's
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None


def _unwritable(out: Path, exc: OSError) -> KatpilotError:
    where = exc.filename or out
    return KatpilotError(f"cannot write {where} ({exc.strerror})", "give --out a writable directory of your own")
