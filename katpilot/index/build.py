"""Parsing many files into the cache: in this process and, for a large tree, in worker processes.

tree-sitter holds the GIL while it parses, so threads do not help; a cold index of a large tree
spreads files over processes (spawned, never forked: the parent may hold a loaded model and
threads), this one included. Each process writes the records it makes to the cache itself (SQLite
in WAL mode lets writers take turns, and a write takes well under a millisecond per file). Sending
them back instead made each worker wait a few milliseconds per chunk: a chunk's records outgrow a
pipe's buffer, and the thread that empties the pipe here needs the GIL, which this process holds
while it parses.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from katpilot.index.indexer import index_file
from katpilot.index.store import IndexStore, open_writer, write_files
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

_worker_db: sqlite3.Connection | None = None  # a worker process's connection to the cache


def worker_count() -> int:
    """Processes that parse a large tree: this one and a spawned worker per further core (8 at most)."""
    return max(1, min(os.cpu_count() or 1, 8))


def index_into(store: IndexStore, root: Path, sources: list[SourceFile], progress: Progress | None = None) -> None:
    """Parse every source and store its record; `progress(n)` after each n files stored."""
    workers = worker_count()
    if len(sources) < PARALLEL_MIN_FILES or workers == 1:
        for start in range(0, len(sources), WRITE_BATCH_FILES):
            batch = sources[start : start + WRITE_BATCH_FILES]
            _index_chunk(store.db, root, batch)
            if progress:
                progress(len(batch))
        return
    pool = ProcessPoolExecutor(
        max_workers=workers - 1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(str(store.path),),
    )
    try:
        _share(store, root, pool, _Chunks(sources, workers), 2 * (workers - 1), progress)
    finally:
        # Every chunk is stored by now; the workers exit on their own time, not the caller's.
        pool.shutdown(wait=False)


def _start_worker(cache_path: str) -> None:
    global _worker_db
    _worker_db = open_writer(Path(cache_path))


def _worker_chunk(root: str, sources: list[SourceFile]) -> int:
    assert _worker_db is not None, "the pool's initializer opens the cache"
    return _index_chunk(_worker_db, Path(root), sources)


def _index_chunk(db: sqlite3.Connection, root: Path, sources: list[SourceFile]) -> int:
    """Parse and store some files (one transaction); how many."""
    write_files(db, [index_file(root, source) for source in sources])
    return len(sources)


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
    progress: Progress | None,
) -> None:
    """Index the chunks in the workers and in this process, which parses too instead of only waiting.

    The workers get chunks from the front (the biggest files), `in_flight` at a time so that each
    has the next one queued; this process takes them from the back between its checks. So it
    parses while the workers start up, and the core it would leave idle is used.
    """
    running: dict[Future[int], list[SourceFile]] = {}
    broken = False
    while chunks or running:
        while not broken and chunks and len(running) < in_flight:
            chunk = chunks.take(front=True)
            running[pool.submit(_worker_chunk, str(root), chunk)] = chunk
        done = [future for future in running if future.done()]
        for future in done:
            chunk = running.pop(future)
            try:
                stored = future.result()
            except BrokenProcessPool:
                # Workers that cannot start (a parent run as `python -` has no main module for
                # spawn to import) or that died: this process indexes their chunks itself. A chunk
                # a worker stored before dying is stored again, the same rows.
                broken = True
                chunks.put_back(chunk)
                continue
            if progress:
                progress(stored)
        if done:
            continue  # hand the workers their next chunks first
        if chunks:
            stored = _index_chunk(store.db, root, chunks.take(front=False))
            if progress:
                progress(stored)
        else:
            wait(running, return_when=FIRST_COMPLETED)
