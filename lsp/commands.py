"""`workspace/executeCommand` commands: katpilot.ask, katpilot.explain, katpilot.applyAction.

pygls resolves each command handler's type hints at call time to convert its arguments, so every
name in these signatures must be importable from this module at run time (no TYPE_CHECKING-only
imports here).
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from lsp import generate
from lsp.action_edits import action_edit, action_target
from lsp.actions import question
from lsp.language_server import KatpilotLanguageServer
from lsp.pygls_compat import to_json
from lsp.questions import controls_for, run_question
from lsp.refusals import refusing


@refusing
async def ask_command(ls: KatpilotLanguageServer, *args: Any) -> dict[str, Any]:
    """katpilot.ask: a free question, optionally about a document or a range of it; the response as JSON."""
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


@refusing
async def explain_command(ls: KatpilotLanguageServer, data: Any = None) -> dict[str, Any]:
    """katpilot.explain: the Explain action; the answer is shown with window/showMessage and returned."""
    spec, doc, first, last = action_target(ls, data)
    language = generate.language_name(doc.uri, doc.language_id)
    prompt = question(spec, doc.line_text(first, last), language, doc.uri, [])
    response = await run_question(ls, prompt, controls_for(ls, None), spec.title, None)
    ls.tell(response.answer or "(no answer)", types.MessageType.Info)
    return response.to_dict()


@refusing
async def apply_action_command(ls: KatpilotLanguageServer, data: Any = None) -> dict[str, Any]:
    """katpilot.applyAction: an edit action for clients without codeAction/resolve, sent with workspace/applyEdit."""
    spec, doc, first, last = action_target(ls, data)
    edit = await action_edit(ls, spec, doc, first, last, data.get("diagnostics", []), None)
    result = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label=spec.title))
    return {"applied": bool(result.applied), "edit": to_json(edit)}


def ask_arguments(args: tuple[Any, ...]) -> dict[str, Any]:
    """`katpilot.ask` takes {question, uri?, range?, think?} or positional (question, uri?, range?)."""
    if len(args) == 1 and isinstance(args[0], dict):
        request = dict(args[0])
    else:
        request = dict(zip(("question", "uri", "range"), args, strict=False))
    if not isinstance(request.get("question"), str) or not request["question"].strip():
        raise JsonRpcInvalidParams(
            'katpilot.ask needs a question: arguments [{"question": "...", "uri"?: ..., "range"?: ...}]'
        )
    if request.get("range") is not None and not request.get("uri"):
        raise JsonRpcInvalidParams("katpilot.ask: a range needs the uri of its document")
    return request


def register_commands(ls: KatpilotLanguageServer) -> None:
    """Register the commands above; pygls advertises them in executeCommandProvider."""
    ls.command("katpilot.ask")(ask_command)
    ls.command("katpilot.explain")(explain_command)
    ls.command("katpilot.applyAction")(apply_action_command)
