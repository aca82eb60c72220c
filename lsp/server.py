"""`katpilot lsp`: a pygls language server for inline completion, code actions and questions.

Requests are handled on pygls' event loop; model work runs on the model thread and index lookups
on the index thread (`lsp.work`), so `$/cancelRequest`, newer completions and document changes are
read while a model generates. Every refusal is a JSON-RPC error whose message says what to do.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcException, JsonRpcInvalidParams
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer

from katpilot import __version__
from katpilot.config import Settings
from katpilot.errors import KatpilotError
from katpilot.gate import Decision, Segment, Text
from katpilot.session import Finished, Response, SessionEvent, ThinkControls
from lsp import generate
from lsp.actions import (
    ACTIONS,
    ActionSpec,
    append_edit,
    create_file_edit,
    extract_code,
    leading_indent,
    question,
    reindent,
    replace_edit,
    where_tests_go,
)
from lsp.documents import OpenDocument, RequestRefused, inside, open_document, uri_to_path
from lsp.settings import LspSettings, apply_options
from lsp.transport import serve_frames
from lsp.work import ModelWork, WorkspaceIndex, describe_definition

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
COMMANDS = ("katpilot.ask", "katpilot.explain", "katpilot.applyAction")


def refusing(handler: F) -> F:
    """Turn katpilot's errors (missing model, context overflow, ...) into JSON-RPC errors."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except KatpilotError as exc:
            raise RequestRefused(exc.one_line()) from exc

    return wrapped  # type: ignore[return-value]


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

    # -- transport: pygls' server with our frame loop -----------------------------------------------

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:  # type: ignore[override]
        self._stop_event = threading.Event()
        reader = StdinAsyncReader(stdin or sys.stdin.buffer, self.thread_pool)
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(serve_frames(reader, self.protocol, self._stop_event))
        except (BrokenPipeError, KeyboardInterrupt):
            pass
        finally:
            self.stop()

    def start_tcp(self, host: str, port: int) -> None:
        """Serve one client on a TCP socket (`--tcp`); stop when it disconnects."""
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)  # type: ignore[arg-type]
            await serve_frames(reader, self.protocol, stop)  # type: ignore[arg-type]
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

        server: asyncio.Server
        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        for cancel in [*self.pending.values(), *self.running]:
            cancel.set()
        self.model.shutdown()
        if self.index is not None:
            self.index.shutdown()
        self.shutdown()

    # -- helpers -----------------------------------------------------------------------------------

    def document(self, uri: str) -> OpenDocument:
        return open_document(self.workspace, uri, self.settings.max_file_bytes)

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

        def report(done: Any) -> None:
            exc = done.exception()
            if isinstance(exc, KatpilotError):
                self.tell(f"katpilot: {exc.one_line()}", types.MessageType.Error)

        future.add_done_callback(report)

    def may_edit(self, path: Path | None) -> bool:
        return path is not None and inside(path, self.roots)

    def client_supports(self, *attributes: str) -> Any:
        """A nested client capability (`"text_document", "code_action", "resolve_support"`), or None."""
        node: Any = self.client_capabilities
        for name in attributes:
            node = getattr(node, name, None)
            if node is None:
                return None
        return node


def build_server(settings: Settings) -> KatpilotLanguageServer:
    """The language server with every feature registered."""
    ls = KatpilotLanguageServer(settings)

    # -- lifecycle and configuration ---------------------------------------------------------------

    @ls.feature(types.INITIALIZE)
    def initialize(ls: KatpilotLanguageServer, params: types.InitializeParams) -> None:
        folders = [uri_to_path(f.uri) for f in (params.workspace_folders or [])]
        if not folders and ls.workspace.root_uri:
            folders = [uri_to_path(ls.workspace.root_uri)]
        ls.roots = [f.resolve() for f in folders if f is not None and f.is_dir()]
        ls.index = WorkspaceIndex(ls.roots[0] if ls.roots else None, ls.tell)
        ls.configure(params.initialization_options)

    @ls.feature(types.INITIALIZED)
    async def initialized(ls: KatpilotLanguageServer, params: types.InitializedParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.preload()
        if ls.index is not None:
            ls.index.start()

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: KatpilotLanguageServer, params: types.DidChangeConfigurationParams) -> None:
        ls.configure(params.settings)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: KatpilotLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        if ls.index is not None:
            ls.index.refresh()

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: KatpilotLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        cancel = ls.pending.pop(params.text_document.uri, None)
        if cancel is not None:
            cancel.set()

    @ls.feature(types.SHUTDOWN)
    def shutdown(ls: KatpilotLanguageServer, params: None) -> None:
        for cancel in [*ls.pending.values(), *ls.running]:
            cancel.set()

    # -- completion --------------------------------------------------------------------------------

    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    @refusing
    async def inline_completion(ls: KatpilotLanguageServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        text = await complete_at(ls, params.text_document.uri, params.position)
        if not text:
            return types.InlineCompletionList(items=[])
        here = types.Range(params.position, params.position)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=here)])

    @ls.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    @refusing
    async def completion(ls: KatpilotLanguageServer, params: types.CompletionParams) -> types.CompletionList:
        text = await complete_at(ls, params.text_document.uri, params.position)
        if not text:
            return types.CompletionList(is_incomplete=True, items=[])
        label = next((line.strip() for line in text.split("\n") if line.strip()), text)
        item = types.CompletionItem(
            label=label[:60],
            kind=types.CompletionItemKind.Text,
            detail="katpilot",
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(types.Range(params.position, params.position), text),
            documentation=types.MarkupContent(types.MarkupKind.PlainText, text),
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    # -- code actions ------------------------------------------------------------------------------

    kinds = sorted({spec.kind for spec in ACTIONS.values()})

    @ls.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(code_action_kinds=kinds, resolve_provider=True))
    @refusing
    async def code_action(ls: KatpilotLanguageServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        doc = ls.document(params.text_document.uri)
        lines = await target_lines(ls, doc, params.range)
        if lines is None:
            return []
        version = doc.version
        diagnostics = [d.message for d in params.context.diagnostics]
        resolvable = bool(ls.client_supports("text_document", "code_action", "resolve_support"))
        only = params.context.only
        actions = []
        for spec in ACTIONS.values():
            if only and not any(spec.kind == k or spec.kind.startswith(f"{k}.") for k in only):
                continue
            if spec.edits and not ls.may_edit(doc.path):
                continue  # edits stay inside the workspace folders
            data = {"action": spec.id, "uri": doc.uri, "version": version, "first": lines[0], "last": lines[1], "diagnostics": diagnostics}
            action = types.CodeAction(title=spec.title, kind=spec.kind)
            if not spec.edits:
                action.command = types.Command(title=spec.title, command="katpilot.explain", arguments=[data])
            elif resolvable:
                action.data = data
            else:
                action.command = types.Command(title=spec.title, command="katpilot.applyAction", arguments=[data])
            actions.append(action)
        return actions

    @ls.feature(types.CODE_ACTION_RESOLVE)
    @refusing
    async def code_action_resolve(ls: KatpilotLanguageServer, action: types.CodeAction) -> types.CodeAction:
        spec, doc, first, last = action_target(ls, action.data)
        action.edit = await action_edit(ls, spec, doc, first, last, action.data.get("diagnostics", []), None)
        return action

    # -- commands ----------------------------------------------------------------------------------

    @ls.command("katpilot.ask")
    @refusing
    async def ask_command(ls: KatpilotLanguageServer, *args: Any) -> dict[str, Any]:
        request = ask_arguments(args)
        text = request["question"]
        uri = request.get("uri")
        if uri:
            doc = ls.document(uri)
            code = doc.text
            if request.get("range"):
                selection = doc.range_from_json(request["range"])
                code = doc.text[doc.offset(selection.start) : doc.offset(selection.end)]
            text = f"{text}\n\n```{generate.language_name(uri, doc.language_id)}\n{code.rstrip()}\n```"
        controls = controls_for(ls, request.get("think"))
        response = await run_question(ls, text, controls, "katpilot: asking", request.get("workDoneToken"))
        return response.to_dict()

    @ls.command("katpilot.explain")
    @refusing
    async def explain_command(ls: KatpilotLanguageServer, data: Any = None) -> dict[str, Any]:
        spec, doc, first, last = action_target(ls, data)
        language = generate.language_name(doc.uri, doc.language_id)
        prompt = question(spec, doc.line_text(first, last), language, doc.uri, [])
        response = await run_question(ls, prompt, controls_for(ls, None), spec.title, None)
        ls.tell(response.answer or "(no answer)", types.MessageType.Info)
        return response.to_dict()

    @ls.command("katpilot.applyAction")
    @refusing
    async def apply_action_command(ls: KatpilotLanguageServer, data: Any = None) -> dict[str, Any]:
        spec, doc, first, last = action_target(ls, data)
        edit = await action_edit(ls, spec, doc, first, last, data.get("diagnostics", []), None)
        result = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label=spec.title))
        return {"applied": bool(result.applied), "edit": ls.protocol._converter.unstructure(edit)}

    return ls


# -- completion ------------------------------------------------------------------------------------


async def complete_at(ls: KatpilotLanguageServer, uri: str, position: types.Position) -> str:
    """The completion at a position, or "" when a newer request for the document replaced this one."""
    settings = ls.settings
    doc = ls.document(uri)
    offset = doc.offset(position)
    cancel = threading.Event()
    older = ls.pending.get(uri)
    if older is not None:
        older.set()  # the user typed on: the older completion is stale
    ls.pending[uri] = cancel
    try:
        if settings.debounce_ms:
            await asyncio.sleep(settings.debounce_ms / 1000)
        if cancel.is_set():
            return ""
        text = await ls.model.run(completion_job, ls, doc, offset, settings, cancel)
        return "" if cancel.is_set() else text
    except asyncio.CancelledError:  # $/cancelRequest
        cancel.set()
        raise
    finally:
        if ls.pending.get(uri) is cancel:
            del ls.pending[uri]


def completion_job(ls: KatpilotLanguageServer, doc: OpenDocument, offset: int, settings: LspSettings, cancel: threading.Event) -> str:
    """On the model thread: repository context, prompt, generation."""
    if cancel.is_set():
        return ""
    engine = ls.model.engine(settings.completion_settings(), "completion")
    repo_context: list[str] = []
    if doc.path is not None and ls.index is not None:
        row, _column = doc.byte_column(offset)
        repo_context = [describe_definition(d) for d in ls.index.definitions_near(doc.path, row, doc.text)]
    label = relative_label(ls, doc)
    language = generate.language_name(label, doc.language_id)
    max_tokens = settings.completion_max_tokens
    ctx = generate.cursor_context(engine, doc.text, offset, label, language, repo_context, max_tokens)
    return generate.complete(engine, settings.base, ctx, generate.completion_sampling(settings.base, max_tokens), cancel)


def relative_label(ls: KatpilotLanguageServer, doc: OpenDocument) -> str:
    """The document's path relative to its workspace folder, for prompts; the URI otherwise."""
    if doc.path is None:
        return doc.uri
    for root in ls.roots:
        if inside(doc.path, [root]):
            return doc.path.resolve().relative_to(root).as_posix()
    return doc.path.name


# -- code actions and questions --------------------------------------------------------------------


async def target_lines(ls: KatpilotLanguageServer, doc: OpenDocument, selection: types.Range) -> tuple[int, int] | None:
    """The lines an action works on: the selected lines, else the enclosing definition's.

    A selection spanning lines (or one whole line) is taken as it is; a cursor or a selection
    within one line means the definition around it, or that line when there is none.
    """
    start, end = doc.offset(selection.start), doc.offset(selection.end)
    first_row = doc.text.count("\n", 0, start)
    last_row = doc.text.count("\n", 0, end)
    if selection.end.character == 0 and last_row > first_row:
        last_row -= 1  # a selection of whole lines ends at the start of the next one
    one_whole_line = selection.start.character == 0 and end > start and doc.text[end : end + 1] in ("\n", "")
    if "\n" in doc.text[start:end] or one_whole_line:
        return first_row, last_row
    # A cursor, or a selection inside one line (Helix always selects a character): the function.
    found = None
    if doc.path is not None and ls.index is not None:
        row, column = doc.byte_column(start)
        found = await asyncio.to_thread(ls.index.enclosing_definition, doc.path, row, column, doc.text)
    if found is not None:
        return found.start[0], found.end[0]
    return (first_row, first_row) if end > start else None


def action_target(ls: KatpilotLanguageServer, data: Any) -> tuple[ActionSpec, OpenDocument, int, int]:
    """The action, document and lines an action's data names, checked against the current text."""
    if not isinstance(data, dict) or data.get("action") not in ACTIONS or not isinstance(data.get("uri"), str):
        raise JsonRpcInvalidParams("this code action's data is not katpilot's: request the code actions again")
    doc = ls.document(data["uri"])
    if data.get("version") is not None and doc.version != data["version"]:
        raise JsonRpcContentModified("the document changed since the action was offered: request the code actions again")
    first, last = data.get("first"), data.get("last")
    if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last < len(doc.lines)):
        raise JsonRpcInvalidParams("the action's lines are outside the document: request the code actions again")
    return ACTIONS[data["action"]], doc, first, last


async def action_edit(
    ls: KatpilotLanguageServer, spec: ActionSpec, doc: OpenDocument, first: int, last: int, diagnostics: list[str], token: Any
) -> types.WorkspaceEdit:
    """Ask the model for the action and build the edit from its answer segment."""
    if not ls.may_edit(doc.path):
        raise RequestRefused(f"{doc.uri} is outside the workspace folders: katpilot edits only files inside them")
    lines = doc.lines
    code = doc.line_text(first, last)
    language = generate.language_name(doc.uri, doc.language_id)
    module = relative_label(ls, doc)
    response = await run_question(ls, question(spec, code, language, module, diagnostics), controls_for(ls, None), spec.title, token)
    new_code = extract_code(response.answer)
    if not new_code.strip():
        raise RequestRefused(f"the model's answer held no code, so nothing was changed (finish: {response.stats.finish_reason})")
    documents_changes = bool(ls.client_supports("workspace", "workspace_edit", "document_changes"))
    if spec.id in ("fix", "docstring"):
        target = doc.line_range(first, last)
        ends_with_newline = last + 1 < len(lines)
        new_text = reindent(new_code, leading_indent(lines[first])) + ("\n" if ends_with_newline else "")
        version = doc.version if documents_changes else None
        return replace_edit(doc.uri, version, target, new_text)
    return tests_edit(ls, doc, language, new_code, documents_changes)


def tests_edit(ls: KatpilotLanguageServer, doc: OpenDocument, language: str, tests: str, documents_changes: bool) -> types.WorkspaceEdit:
    """Tests go to the usual test file: appended when it exists, created when the client can."""
    assert doc.path is not None
    target = where_tests_go(doc.path, language, ls.roots)
    can_create = documents_changes and "create" in (ls.client_supports("workspace", "workspace_edit", "resource_operations") or [])
    if target != doc.path and not target.exists() and can_create and inside(target.parent, ls.roots):
        return create_file_edit(target.as_uri(), tests)
    if target == doc.path or not target.exists() or not inside(target, ls.roots):
        target_doc = doc  # no separate test file to use: the tests go below the code
    elif target.as_uri() in ls.workspace.text_documents:
        target_doc = ls.document(target.as_uri())
    else:
        text = target.read_text(encoding="utf-8", errors="replace")
        target_doc = OpenDocument(target.as_uri(), text, target, language, doc.encoding)
    end = target_doc.position(len(target_doc.text))
    return append_edit(target_doc.uri, end, tests, target_doc.text.endswith("\n"))


def controls_for(ls: KatpilotLanguageServer, think: Any) -> ThinkControls:
    """The configured think controls, with `think` overridden for one request."""
    base = ls.settings.base
    if think is not None and think not in ("auto", "on", "off"):
        raise JsonRpcInvalidParams(f"think must be auto, on or off, not {think!r}")
    return ThinkControls(think=think or base.think, budget=base.budget, threshold=base.threshold)


async def run_question(ls: KatpilotLanguageServer, text: str, controls: ThinkControls, title: str, token: Any) -> Response:
    """Ask on the model thread with work-done progress ("thinking…" while in think mode).

    The progress ends when the model has actually stopped, saying how (done or cancelled) and
    after how many tokens, also when the request was cancelled before that.
    """
    progress = Progress(ls, title, token)
    await progress.begin()
    cancel = threading.Event()
    follow_cancellation(ls, cancel)
    ls.running.add(cancel)
    settings = ls.settings.base
    job = ls.model.submit(lambda: generate.ask(ls.model.engine(settings), settings, text, controls, cancel, progress.on_event))
    loop = asyncio.get_running_loop()

    def finished(_job: object) -> None:
        ls.running.discard(cancel)
        if not loop.is_closed():  # the server may be shutting down
            loop.call_soon_threadsafe(progress.end)

    job.add_done_callback(finished)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        cancel.set()
        raise


def follow_cancellation(ls: KatpilotLanguageServer, cancel: threading.Event) -> None:
    """Set `cancel` when the client cancels the request being handled.

    pygls runs `workspace/executeCommand` handlers as an inner task under an id of its own, so a
    `$/cancelRequest` cancels only the outer request's future, never reaching the handler; watch
    that future too.
    """
    outer = ls.protocol._request_futures.get(ls.protocol.msg_id)  # type: ignore[arg-type]
    if outer is not None:
        outer.add_done_callback(lambda future: cancel.set() if future.cancelled() else None)


def ask_arguments(args: tuple[Any, ...]) -> dict[str, Any]:
    """`katpilot.ask` takes {question, uri?, range?, think?} or positional (question, uri?, range?)."""
    if len(args) == 1 and isinstance(args[0], dict):
        request = dict(args[0])
    else:
        request = dict(zip(("question", "uri", "range"), args))
    if not isinstance(request.get("question"), str) or not request["question"].strip():
        raise JsonRpcInvalidParams('katpilot.ask needs a question: arguments [{"question": "...", "uri"?: ..., "range"?: ...}]')
    if request.get("range") is not None and not request.get("uri"):
        raise JsonRpcInvalidParams("katpilot.ask: a range needs the uri of its document")
    return request


class Progress:
    """Work-done progress of one request; silent when the client cannot show it."""

    def __init__(self, ls: KatpilotLanguageServer, title: str, token: Any) -> None:
        self.ls = ls
        self.title = title
        self.token = token
        self.thinking = False
        self.answering = False
        self.response: Response | None = None

    async def begin(self) -> None:
        if self.token is None and self.ls.client_supports("window", "work_done_progress"):
            self.token = str(uuid.uuid4())
            try:
                await self.ls.work_done_progress.create_async(self.token)
            except (JsonRpcException, asyncio.TimeoutError):
                self.token = None
        if self.token is not None:
            self.ls.work_done_progress.begin(self.token, types.WorkDoneProgressBegin(title=self.title, message="starting…", cancellable=False))

    def on_event(self, event: SessionEvent) -> None:
        """Called on the model thread for every session event."""
        if isinstance(event, Finished):
            self.response = event.response
        message = None
        if isinstance(event, Decision) and event.mode == "on" and not self.thinking:
            self.thinking, message = True, "thinking…"
        elif isinstance(event, Text) and event.segment is Segment.THINK and not self.thinking:
            self.thinking, message = True, "thinking…"
        elif isinstance(event, Text) and event.segment is Segment.ANSWER and not self.answering:
            self.answering, message = True, "answering…"
        if message and self.token is not None and self.ls.loop is not None:
            report = types.WorkDoneProgressReport(message=message)
            self.ls.loop.call_soon_threadsafe(self.ls.work_done_progress.report, self.token, report)

    def end(self) -> None:
        if self.token is None:
            return
        message = "stopped"
        if self.response is not None:
            stats = self.response.stats
            how = "cancelled" if stats.finish_reason == "cancelled" else "done"
            message = f"{how} after {stats.completion_tokens} tokens (think {self.response.mode})"
        self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))


class _QuietRefusals(logging.Filter):
    """pygls logs every error response with a traceback; a refusal we chose is not a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (JsonRpcInvalidParams, JsonRpcContentModified, RequestRefused))


def run(settings: Settings, tcp: tuple[str, int] | None = None) -> None:
    """Serve over stdio, or over TCP when `tcp` is given."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="katpilot lsp: %(message)s")
    logging.getLogger("pygls.protocol.json_rpc").addFilter(_QuietRefusals())
    server = build_server(settings)
    if tcp is None:
        server.start_io()
    else:
        server.start_tcp(*tcp)
