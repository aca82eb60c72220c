"""The server's two background threads: one for the model, one for the repository index.

The event loop must stay free to read `$/cancelRequest` and newer requests while a model
generates, so all model work runs on one thread (the engine serves one generation at a time
anyway) and all index work on another (its SQLite connection belongs to the thread that opened it,
and a cold build of a large repository must not hold up completions).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from katpilot.config import Settings
from katpilot.engine.base import Engine
from katpilot.errors import KatpilotError
from katpilot.index import RepoIndex
from katpilot.index.parse import Definition
from lsp.documents import inside

T = TypeVar("T")
log = logging.getLogger(__name__)
# How long a completion waits for repository context before going on without it.
CONTEXT_TIMEOUT_S = 0.5
# How long a code action waits for the first index build to find the enclosing definition.
FIRST_BUILD_WAIT_S = 10.0


class ModelWork:
    """The server's engines, loaded on first use and again when the model settings change.

    Usually one engine serves everything; a configured `completion_model` gets a second one.
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="katpilot-model")
        self._engines: dict[str, tuple[tuple[object, ...], Engine]] = {}  # role -> (settings key, engine)

    def engine(self, settings: Settings, role: str = "main") -> Engine:
        """The engine for these settings (call on the model thread); `role` keeps two apart."""
        from katpilot.models import load_engine

        key = (
            settings.model,
            settings.n_ctx,
            settings.n_threads,
            settings.api_key,
            settings.remote_gguf,
            tuple(settings.models.items()),
        )
        current = self._engines.get(role)
        if current is not None and current[0] == key:
            return current[1]
        shared = next((engine for loaded_key, engine in self._engines.values() if loaded_key == key), None)
        engine = shared or load_engine(settings)  # the completion model may be the main model
        self._engines[role] = (key, engine)
        if current is not None and all(other is not current[1] for _, other in self._engines.values()):
            current[1].close()  # the replaced engine serves no other role
        return engine

    def unload(self) -> None:
        for engine in {id(e): e for _key, e in self._engines.values()}.values():
            engine.close()
        self._engines.clear()

    async def run(self, job: Callable[..., T], *args: object) -> T:
        """Run `job(*args)` on the model thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, job, *args)

    def submit(self, job: Callable[..., T], *args: object) -> Future[T]:
        return self._thread.submit(job, *args)

    def shutdown(self) -> None:
        self._thread.submit(self.unload)
        self._thread.shutdown(wait=False, cancel_futures=True)


class WorkspaceIndex:
    """The tree-sitter index of the workspace root, built in the background after `initialized`."""

    def __init__(self, root: Path | None, notify: Callable[[str], None]) -> None:
        self.root = root
        self._notify = notify  # tells the user about a failed build, once
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="katpilot-index")
        self._index: RepoIndex | None = None
        self.ready = threading.Event()  # built: lookups answer from it
        self.settled = threading.Event()  # the first build finished, built or failed

    def start(self) -> None:
        if self.root is not None:
            self._thread.submit(self._build, self.root)

    def _build(self, root: Path) -> None:
        try:
            self._index = RepoIndex(root)
            report = self._index.refresh()
            log.info("index: %s", report.summary())
            self.ready.set()
        except KatpilotError as exc:
            self._notify(f"katpilot: no repository context: {exc.one_line()}")
        finally:
            self.settled.set()

    def refresh(self) -> None:
        """Re-index changed files (after a save); cheap when nothing changed."""
        if self.ready.is_set():
            self._thread.submit(self._refresh_quietly)

    def _refresh_quietly(self) -> None:
        assert self._index is not None  # submitted only once `ready`, which the build sets after it
        try:
            self._index.refresh()
        except KatpilotError as exc:
            log.warning("index refresh failed: %s", exc.one_line())

    def _call(self, job: Callable[[RepoIndex], T], default: T, timeout: float | None = CONTEXT_TIMEOUT_S) -> T:
        """Run a lookup on the index thread; the default when the index is not built or too slow."""
        if not self.ready.is_set() or self._index is None:
            return default
        index = self._index
        future = self._thread.submit(job, index)
        try:
            return future.result(timeout=timeout)
        except KatpilotError:
            return default
        except TimeoutError:
            future.cancel()
            return default

    def definitions_near(self, path: Path, row: int, text: str) -> list[Definition]:
        """Definitions (anywhere in the repository) of names used around `row` of the editor text."""
        if not self._contains(path):
            return []
        return self._call(lambda index: index.definitions_near(path, row, text=text), [])

    def enclosing_definition(self, path: Path, row: int, column: int, text: str) -> Definition | None:
        """The innermost definition around a position of the editor text."""
        if not self._contains(path):
            return None
        self.settled.wait(FIRST_BUILD_WAIT_S)
        return self._call(lambda index: index.enclosing_definition(path, row, column, text=text), None, timeout=None)

    def _contains(self, path: Path) -> bool:
        return self.root is not None and inside(path, [self.root])

    def shutdown(self) -> None:
        self._thread.submit(lambda: self._index.close() if self._index else None)
        self._thread.shutdown(wait=False, cancel_futures=True)


def describe_definition(definition: Definition) -> str:
    """One line of repository context for a prompt."""
    return f"{definition.path}:{definition.start[0] + 1}: {definition.signature}"
