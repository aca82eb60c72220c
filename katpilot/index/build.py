"""Parsing many files into the cache: in this process and, for a large tree, in worker processes.

tree-sitter holds the GIL while it parses, so threads do not help; a cold index of a large tree
spreads files over processes, this one included.

- Workers are forked when this process runs a single thread (fork copies only the calling
  thread, so with one nothing is left half-done): a forked worker parses within milliseconds,
  a spawned one starts Python and imports the parser first (about 0.1 s of a core). A process
  with more threads (the chat, the LSP: a loaded model has its own) spawns them.
- A worker hands its records back in a file, whose name is all that goes through the pipe: a
  chunk's records outgrow a pipe's buffer, and the thread that empties it here needs the GIL,
  which this process holds while it parses, so the worker would wait. Workers never open the
  cache: SQLite state must not cross a fork.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from katpilot.index.indexer import index_file
from katpilot.index.store import IndexStore
from katpilot.index.walk import SourceFile

# Below this many files to parse, one process does it faster than starting workers.
PARALLEL_MIN_FILES = 200
# Files go to the processes in chunks of a share of the source still to parse (guided
# scheduling): large while there is much left, so that handing them out costs little, small at
# the end, so that no process waits long for another's last chunk.
CHUNK_SHARE = 8  # a chunk is 1/(CHUNK_SHARE x processes) of what is left ...
MIN_CHUNK_BYTES = 32 * 1024  # ... but no less than this
MAX_CHUNK_BYTES = 512 * 1024  # ... nor more than this
# A single process writes its records in transactions of this many files.
WRITE_BATCH_FILES = 256

Progress = Callable[[int], None]


def worker_count() -> int:
    """Processes that parse a large tree: this one and a worker per further core (8 at most)."""
    return max(1, min(os.cpu_count() or 1, 8))


def index_into(store: IndexStore, root: Path, sources: list[SourceFile], progress: Progress | None = None) -> None:
    """Parse every source and store its record; `progress(n)` after each n files stored."""
    workers = worker_count()
    handover = _handover_dir() if len(sources) >= PARALLEL_MIN_FILES and workers > 1 else None
    if handover is None:
        for start in range(0, len(sources), WRITE_BATCH_FILES):
            _index_here(store, root, sources[start : start + WRITE_BATCH_FILES], progress)
        return
    pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=multiprocessing.get_context(start_method()))
    try:
        _share(store, root, pool, _Chunks(sources, workers), 2 * (workers - 1), handover, progress)
    finally:
        # Every chunk is stored by now (unless this was interrupted); the workers exit on their
        # own time, not the caller's.
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(handover, ignore_errors=True)


def _index_here(store: IndexStore, root: Path, sources: list[SourceFile], progress: Progress | None) -> None:
    """Parse and store some files in this process (one transaction)."""
    store.write([index_file(root, source) for source in sources])
    if progress:
        progress(len(sources))


def _handover_dir() -> Path | None:
    """A private directory for the workers' record files; None where none can be made (this
    process then indexes alone)."""
    try:
        return Path(tempfile.mkdtemp(prefix="katpilot-index-"))
    except OSError:
        return None


def start_method() -> str:
    """How to start workers: "fork" where this process runs a single thread, else "spawn"."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    try:
        threads = len(os.listdir("/proc/self/task"))  # every thread, the model's native ones too
    except OSError:
        return "spawn"  # no way to count them here
    return "fork" if threads == 1 else "spawn"


def _worker_chunk(root: str, sources: list[SourceFile], handover: str) -> str:
    """A worker's share: parse some files, and leave their records in a file; its name."""
    records = [index_file(Path(root), source) for source in sources]
    fd, name = tempfile.mkstemp(dir=handover, suffix=".records")
    with os.fdopen(fd, "wb") as file:
        pickle.dump(records, file, protocol=pickle.HIGHEST_PROTOCOL)
    return name


def _store_handover(store: IndexStore, name: str) -> int:
    """Store the records a worker left in a file (and remove it); how many."""
    with open(name, "rb") as file:
        records = pickle.load(file)
    os.unlink(name)
    store.write(records)
    return len(records)


class _Chunks:
    """The files to parse, biggest first, taken in chunks from the front (workers: the big files)
    or the back (this process, between its checks on the workers)."""

    def __init__(self, sources: list[SourceFile], processes: int) -> None:
        self.files = deque(sorted(sources, key=lambda s: s.size, reverse=True))
        self.left = sum(source.size for source in sources)
        self.processes = processes

    def __bool__(self) -> bool:
        return bool(self.files)

    def take(self, front: bool) -> list[SourceFile]:
        target = min(max(self.left // (CHUNK_SHARE * self.processes), MIN_CHUNK_BYTES), MAX_CHUNK_BYTES)
        chunk: list[SourceFile] = []
        size = 0
        while self.files and size < target:
            source = self.files.popleft() if front else self.files.pop()
            chunk.append(source)
            size += source.size
        self.left -= size
        return chunk

    def put_back(self, chunk: list[SourceFile]) -> None:
        self.files.extend(chunk)
        self.left += sum(source.size for source in chunk)


def _share(
    store: IndexStore,
    root: Path,
    pool: ProcessPoolExecutor,
    chunks: _Chunks,
    in_flight: int,
    handover: Path,
    progress: Progress | None,
) -> None:
    """Index the chunks in the workers and in this process, which parses too instead of only waiting.

    The workers get chunks from the front (the biggest files), `in_flight` at a time so that each
    has the next one queued; this process takes them from the back between its checks. So it
    parses while the workers start up, and the core it would leave idle is used.
    """
    running: dict[Future[str], list[SourceFile]] = {}
    broken = False
    while chunks or running:
        while not broken and chunks and len(running) < in_flight:
            chunk = chunks.take(front=True)
            running[pool.submit(_worker_chunk, str(root), chunk, str(handover))] = chunk
        done = [future for future in running if future.done()]
        for future in done:
            chunk = running.pop(future)
            try:
                stored = _store_handover(store, future.result())
            except (BrokenProcessPool, OSError, pickle.UnpicklingError, EOFError):
                # Workers that cannot start (a parent run as `python -` has no main module for
                # spawn to import), that died, or whose records could not go through a file (a
                # full disk): this process indexes their chunks, and the rest, itself.
                broken = True
                chunks.put_back(chunk)
                continue
            if progress:
                progress(stored)
        if done:
            continue  # hand the workers their next chunks first
        if chunks:
            _index_here(store, root, chunks.take(front=False), progress)
        else:
            wait(running, return_when=FIRST_COMPLETED)
