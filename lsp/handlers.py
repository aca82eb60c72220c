"""One handler per LSP method the server implements, and `register_features` to hook them into pygls.

Each handler is small: it reads the params, calls the module that does the work (lsp.scheduling,
lsp.action_edits) and shapes the result. Handlers of requests that may fail on katpilot's side
are `@refusing`, so the client gets a JSON-RPC error whose message names the fix.
`workspace/executeCommand` commands live in lsp.commands.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types

from lsp.action_edits import (
    ACTION_KINDS,
    action_edit,
    action_target,
    offered_actions,
    target_lines,
)
from lsp.documents import uri_to_path
from lsp.language_server import KatpilotLanguageServer
from lsp.refusals import refusing
from lsp.scheduling import complete_at
from lsp.work import WorkspaceIndex

# -- lifecycle and configuration -------------------------------------------------------------------


def initialize(ls: KatpilotLanguageServer, params: types.InitializeParams) -> None:
    """initialize: remember the workspace folders (edits stay inside them) and apply initializationOptions."""
    folders = [uri_to_path(f.uri) for f in (params.workspace_folders or [])]
    if not folders and ls.workspace.root_uri:
        folders = [uri_to_path(ls.workspace.root_uri)]
    ls.roots = [f.resolve() for f in folders if f is not None and f.is_dir()]
    ls.index = WorkspaceIndex(ls.roots[0] if ls.roots else None, ls.tell)
    ls.configure(params.initialization_options)


async def initialized(ls: KatpilotLanguageServer, params: types.InitializedParams) -> None:
    """initialized: load the model and start the index build, both in the background."""
    ls.loop = asyncio.get_running_loop()
    ls.preload()
    if ls.index is not None:
        ls.index.start()


def did_change_configuration(ls: KatpilotLanguageServer, params: types.DidChangeConfigurationParams) -> None:
    """workspace/didChangeConfiguration: apply the new settings (a model change reloads it)."""
    ls.configure(params.settings)


def did_save(ls: KatpilotLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    """textDocument/didSave: re-index what changed, so repository context stays current."""
    if ls.index is not None:
        ls.index.refresh()


def did_close(ls: KatpilotLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    """textDocument/didClose: cancel the document's pending completion."""
    cancel = ls.pending.pop(params.text_document.uri, None)
    if cancel is not None:
        cancel.set()


def shutdown(ls: KatpilotLanguageServer, params: None) -> None:
    """shutdown: stop every generation under way (pygls then cancels the requests)."""
    ls.cancel_all()


# -- completion ------------------------------------------------------------------------------------


@refusing
async def inline_completion(
    ls: KatpilotLanguageServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList | None:
    """textDocument/inlineCompletion: the completion as ghost text at the cursor."""
    text = await complete_at(ls, params.text_document.uri, params.position)
    if not text:
        return types.InlineCompletionList(items=[])
    here = types.Range(params.position, params.position)
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=here)])


@refusing
async def completion(ls: KatpilotLanguageServer, params: types.CompletionParams) -> types.CompletionList:
    """textDocument/completion: the completion as one item, for clients without inline completion."""
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


# -- code actions ----------------------------------------------------------------------------------


@refusing
async def code_action(ls: KatpilotLanguageServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """textDocument/codeAction: Explain, Fix, Add docstring, Write tests for the selection or the enclosing definition."""
    doc = ls.document(params.text_document.uri)
    lines = await target_lines(ls, doc, params.range)
    if lines is None:
        return []
    return offered_actions(ls, doc, lines, params.context)


@refusing
async def code_action_resolve(ls: KatpilotLanguageServer, action: types.CodeAction) -> types.CodeAction:
    """codeAction/resolve: run the model for an edit action and attach its WorkspaceEdit."""
    data: Any = action.data  # katpilot's own, checked by action_target
    spec, doc, first, last = action_target(ls, data)
    action.edit = await action_edit(ls, spec, doc, first, last, data.get("diagnostics", []), None)
    return action


def register_features(ls: KatpilotLanguageServer) -> None:
    """Register every handler above with pygls, with the options its capability advertises."""
    ls.feature(types.INITIALIZE)(initialize)
    ls.feature(types.INITIALIZED)(initialized)
    ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(did_change_configuration)
    ls.feature(types.TEXT_DOCUMENT_DID_SAVE)(did_save)
    ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)(did_close)
    ls.feature(types.SHUTDOWN)(shutdown)
    ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(inline_completion)
    ls.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))(completion)
    ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(code_action_kinds=ACTION_KINDS, resolve_provider=True)
    )(code_action)
    ls.feature(types.CODE_ACTION_RESOLVE)(code_action_resolve)
