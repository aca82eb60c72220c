"""The language server's state and start-up: settings, the model and index threads, pending work.

Handlers (lsp.handlers, lsp.commands) receive this object as `ls`; it holds what outlives one
request and the small helpers several handlers share. Both start-ups run our frame loop
(lsp.transport) instead of pygls', so that a bad frame is answered rather than dropped.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from katpilot import __version__
from katpilot.config import Settings
from katpilot.errors import KatpilotError
from lsp import pygls_compat
from lsp.documents import OpenDocument, inside, open_document, relative_label
from lsp.settings import LspSettings, apply_options
from lsp.transport import serve_frames
from lsp.work import ModelWork, WorkspaceIndex


class KatpilotLanguageServer(LanguageServer):
    """The server's state: settings, the model and index threads, and pending completions."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("katpilot", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = LspSettings(base=settings)
        self.model = ModelWork()
        self.index: WorkspaceIndex | None = None
        self.roots: list[Path] = []
        self.pending: dict[str, threading.Event] = {}  # document URI -> cancel of its newest completion
        self.running: set[threading.Event] = set()  # cancel events of questions and actions under way
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- start-up and stop ---------------------------------------------------------------------------

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve one client over stdin/stdout until end of input or `exit`."""
        try:
            pygls_compat.start_io(self, serve_frames, stdin, stdout)
        finally:
            self.stop()

    def start_tcp(self, host: str, port: int) -> None:
        """Serve one client on a TCP socket (`--tcp`); stop when it disconnects."""
        stop = pygls_compat.new_stop_event(self)
        server: asyncio.Server  # set by main(), closed by the connection when its client leaves

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)
            await serve_frames(reader, self.protocol, stop)
            server.close()

        async def main() -> None:
            nonlocal server
            server = await asyncio.start_server(connection, host, port)
            address = server.sockets[0].getsockname()
            print(f"katpilot lsp: listening on {address[0]}:{address[1]}", file=sys.stderr, flush=True)
            async with server:
                try:
                    await server.serve_forever()
                except asyncio.CancelledError:
                    pass

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def cancel_all(self) -> None:
        """Cancel every completion, question and action under way."""
        for cancel in [*self.pending.values(), *self.running]:
            cancel.set()

    def stop(self) -> None:
        """Cancel the work, close the engines and the index, then pygls' own shutdown."""
        self.cancel_all()
        self.model.shutdown()
        if self.index is not None:
            self.index.shutdown()
        self.shutdown()  # type: ignore[no-untyped-call]  # pygls leaves JsonRPCServer.shutdown unannotated

    # -- helpers shared by handlers ------------------------------------------------------------------

    def document(self, uri: str) -> OpenDocument:
        """The open document at `uri`, checked (lsp.documents refuses the unusable ones)."""
        return open_document(self.workspace, uri, self.settings.max_file_bytes)

    def label(self, doc: OpenDocument) -> str:
        """The document's name for prompts, relative to its workspace folder."""
        return relative_label(doc, self.roots)

    def tell(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """window/showMessage from any thread."""
        params = types.ShowMessageParams(type=kind, message=message)
        if self.loop is not None and threading.current_thread() is not threading.main_thread():
            self.loop.call_soon_threadsafe(self.window_show_message, params)
        else:
            self.window_show_message(params)

    def configure(self, options: Any) -> None:
        """Apply client options; report bad ones; reload the model if it changed."""
        self.settings, problems, reload = apply_options(self.settings, options)
        for problem in problems:
            self.tell(f"katpilot: {problem}")
        if reload and self.loop is not None:
            self.preload()

    def preload(self) -> None:
        """Load the model now so the first completion does not pay for it."""
        future = self.model.submit(self.model.engine, self.settings.base)

        def report(done: Future[Any]) -> None:
            exc = done.exception()
            if isinstance(exc, KatpilotError):
                self.tell(f"katpilot: {exc.one_line()}", types.MessageType.Error)

        future.add_done_callback(report)

    def may_edit(self, path: Path | None) -> bool:
        """Edits stay inside the workspace folders."""
        return path is not None and inside(path, self.roots)

    def client_supports(self, *attributes: str) -> Any:
        """A nested client capability (`"text_document", "code_action", "resolve_support"`), or None."""
        node: Any = self.client_capabilities
        for name in attributes:
            node = getattr(node, name, None)
            if node is None:
                return None
        return node
