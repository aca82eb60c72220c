"""A synchronous handle on pygls' LanguageClient talking to a real `katpilot lsp` process over pipes."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from lsp.pygls_compat import to_json

T = TypeVar("T")
TIMEOUT_S = 120

CALC_PY = (
    """def add(a, b):
    return a + b


def mean(values):
    total = 0
    for v in values:
        total = add(total, v)
    return total / len(values)


def square(x):
"""
    + "    \n"  # the body of square(): an indented empty line, where completions are asked for
)

FULL_CAPABILITIES = types.ClientCapabilities(
    text_document=types.TextDocumentClientCapabilities(
        code_action=types.CodeActionClientCapabilities(
            resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]),
            data_support=True,
        ),
    ),
    window=types.WindowClientCapabilities(work_done_progress=True),
    workspace=types.WorkspaceClientCapabilities(
        workspace_edit=types.WorkspaceEditClientCapabilities(
            document_changes=True, resource_operations=[types.ResourceOperationKind.Create]
        ),
    ),
)


class ExitRecordingClient(LanguageClient):
    """pygls' client, keeping the server process's exit code (through the public `server_exit` hook)."""

    returncode: int | None = None

    async def server_exit(self, server: asyncio.subprocess.Process) -> None:
        self.returncode = server.returncode


class Client:
    """A language client on its own event-loop thread, with blocking calls for tests."""

    def __init__(
        self,
        root: Path,
        home: Path,
        init_options: dict[str, Any] | None = None,
        capabilities: types.ClientCapabilities = FULL_CAPABILITIES,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.messages: list[types.ShowMessageParams] = []
        self.progress: list[dict[str, Any]] = []  # $/progress values: kind, title, message
        self.applied: list[types.WorkspaceEdit] = []
        self.stderr_path = home / "lsp-stderr.txt"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.lc = ExitRecordingClient("katpilot-tests", "1")
        self._register()
        environ = {**os.environ, "KATPILOT_HOME": str(home), "LSP_LOG": str(self.stderr_path), **(env or {})}
        # pygls pipes the server's stderr and never reads it: send it to a file instead.
        command = f'exec "{sys.executable}" -m katpilot lsp 2>>"$LSP_LOG"'
        self.call(self.lc.start_io("/bin/sh", "-c", command, env=environ))
        self.initialize_result = self.call(
            self.lc.initialize_async(
                types.InitializeParams(
                    capabilities=capabilities,
                    root_uri=root.as_uri(),
                    workspace_folders=[types.WorkspaceFolder(root.as_uri(), root.name)],
                    initialization_options=init_options,
                )
            )
        )
        self.lc.initialized(types.InitializedParams())

    def _register(self) -> None:
        @self.lc.feature(types.WINDOW_SHOW_MESSAGE)
        def show(ls: LanguageClient, params: types.ShowMessageParams) -> None:
            self.messages.append(params)

        @self.lc.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(ls: LanguageClient, params: types.WorkDoneProgressCreateParams) -> None:
            return None

        @self.lc.feature(types.PROGRESS)
        def progress(ls: LanguageClient, params: types.ProgressParams) -> None:
            value = params.value
            self.progress.append(value if isinstance(value, dict) else to_json(value))

        @self.lc.feature(types.WORKSPACE_APPLY_EDIT)
        def apply(ls: LanguageClient, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            self.applied.append(params.edit)
            return types.ApplyWorkspaceEditResult(applied=True)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def send(self, method: str, params: Any, msg_id: str | None = None) -> Future[Any]:
        """Send a request from the client's loop; the future holds the result or the error."""

        async def request() -> Any:
            return await self.lc.protocol.send_request_async(method, params, msg_id=msg_id)

        return asyncio.run_coroutine_threadsafe(request(), self.loop)

    def request(self, method: str, params: Any, timeout: float = TIMEOUT_S) -> Any:
        return self.send(method, params).result(timeout)

    def notify(self, method: str, params: Any) -> None:
        self.loop.call_soon_threadsafe(self.lc.protocol.notify, method, params)

    def open(self, path: Path, text: str, language: str = "python", version: int = 1) -> str:
        uri = path.as_uri()
        self.notify(
            types.TEXT_DOCUMENT_DID_OPEN,
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, version, text)),
        )
        return uri

    def inline(self, uri: str, line: int, character: int, timeout: float = TIMEOUT_S) -> types.InlineCompletionList:
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(line, character),
        )
        return self.request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, timeout)

    def server_log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def close(self) -> int | None:
        try:
            self.call(self.lc.shutdown_async(None), timeout=30)
            self.lc.exit(None)
            self.call(self.lc.stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        return self.lc.returncode
