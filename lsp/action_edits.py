"""Code actions against the open documents: which are offered, what they work on, the edit each becomes.

`offered_actions` puts the action, the document's version and the target lines in each action's
`data`; `action_target` checks that data when the action is resolved or applied, against the
document as it is then, so an edit is never computed for text that has changed. The prompts and
the edit shapes themselves are pure (lsp.actions).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams

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
from lsp.documents import OpenDocument, RequestRefused, inside
from lsp.language_server import KatpilotLanguageServer
from lsp.questions import controls_for, run_question

# Every kind an action may have, for the server's codeActionProvider capability.
ACTION_KINDS = sorted({spec.kind for spec in ACTIONS.values()})


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


def offered_actions(
    ls: KatpilotLanguageServer, doc: OpenDocument, lines: tuple[int, int], context: types.CodeActionContext
) -> list[types.CodeAction]:
    """The actions for these lines: Explain as a command; edits resolved, or applied by command."""
    version = doc.version
    diagnostics = [d.message for d in context.diagnostics]
    resolvable = bool(ls.client_supports("text_document", "code_action", "resolve_support"))
    only = context.only
    actions = []
    for spec in ACTIONS.values():
        if only and not any(spec.kind == k or spec.kind.startswith(f"{k}.") for k in only):
            continue
        if spec.edits and not ls.may_edit(doc.path):
            continue  # edits stay inside the workspace folders
        data = {
            "action": spec.id,
            "uri": doc.uri,
            "version": version,
            "first": lines[0],
            "last": lines[1],
            "diagnostics": diagnostics,
        }
        action = types.CodeAction(title=spec.title, kind=spec.kind)
        if not spec.edits:
            action.command = types.Command(title=spec.title, command="katpilot.explain", arguments=[data])
        elif resolvable:
            action.data = data
        else:
            action.command = types.Command(title=spec.title, command="katpilot.applyAction", arguments=[data])
        actions.append(action)
    return actions


def action_target(ls: KatpilotLanguageServer, data: Any) -> tuple[ActionSpec, OpenDocument, int, int]:
    """The action, document and lines an action's data names, checked against the current text."""
    if not isinstance(data, dict) or data.get("action") not in ACTIONS or not isinstance(data.get("uri"), str):
        raise JsonRpcInvalidParams("this code action's data is not katpilot's: request the code actions again")
    doc = ls.document(data["uri"])
    if data.get("version") is not None and doc.version != data["version"]:
        raise JsonRpcContentModified(
            "the document changed since the action was offered: request the code actions again"
        )
    first, last = data.get("first"), data.get("last")
    if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last < len(doc.lines)):
        raise JsonRpcInvalidParams("the action's lines are outside the document: request the code actions again")
    return ACTIONS[data["action"]], doc, first, last


async def action_edit(
    ls: KatpilotLanguageServer,
    spec: ActionSpec,
    doc: OpenDocument,
    first: int,
    last: int,
    diagnostics: list[str],
    token: Any,
) -> types.WorkspaceEdit:
    """Ask the model for the action and build the edit from its answer segment."""
    if not ls.may_edit(doc.path):
        raise RequestRefused(f"{doc.uri} is outside the workspace folders: katpilot edits only files inside them")
    lines = doc.lines
    code = doc.line_text(first, last)
    language = generate.language_name(doc.uri, doc.language_id)
    module = ls.label(doc)
    response = await run_question(
        ls, question(spec, code, language, module, diagnostics), controls_for(ls, None), spec.title, token
    )
    new_code = extract_code(response.answer)
    if not new_code.strip():
        raise RequestRefused(
            f"the model's answer held no code, so nothing was changed (finish: {response.stats.finish_reason})"
        )
    documents_changes = bool(ls.client_supports("workspace", "workspace_edit", "document_changes"))
    if spec.id in ("fix", "docstring"):
        target = doc.line_range(first, last)
        ends_with_newline = last + 1 < len(lines)
        new_text = reindent(new_code, leading_indent(lines[first])) + ("\n" if ends_with_newline else "")
        version = doc.version if documents_changes else None
        return replace_edit(doc.uri, version, target, new_text)
    return tests_edit(ls, doc, language, new_code, documents_changes)


def tests_edit(
    ls: KatpilotLanguageServer, doc: OpenDocument, language: str, tests: str, documents_changes: bool
) -> types.WorkspaceEdit:
    """Tests go to the usual test file: appended when it exists, created when the client can."""
    assert doc.path is not None
    target = where_tests_go(doc.path, language, ls.roots)
    can_create = documents_changes and "create" in (
        ls.client_supports("workspace", "workspace_edit", "resource_operations") or []
    )
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
