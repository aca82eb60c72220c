"""`katpilot lsp` end to end: pygls' client over real pipes to a real server on the embedded model."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lsp_helpers import CALC_PY, Client
from lsprotocol import types
from pygls.exceptions import JsonRpcException

TAGS = ("<judge", "<think", "</think", "<answer", "</answer", "<think_on", "<think_off")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    (root / "calc.py").write_text(CALC_PY)
    (root / "shapes.py").write_text("from calc import add\n\n\ndef perimeter(a, b):\n    return add(a, b) * 2\n")
    return root


@pytest.fixture(scope="module")
def client(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    home = tmp_path_factory.mktemp("lsp-home")
    c = Client(
        workspace,
        home,
        init_options={"katpilot": {"debounce_ms": 0, "completion_max_tokens": 24, "max_tokens": 64, "think": "off"}},
    )
    yield c
    assert c.close() == 0, c.server_log()


def open_copy(client: Client, text: str = CALC_PY, name: str | None = None) -> tuple[str, Path]:
    """Open a fresh document (a new file in the workspace) so tests do not share versions."""
    path = client.root / (name or f"doc_{uuid.uuid4().hex[:8]}.py")
    path.write_text(text)
    return client.open(path, text), path


def error_of(call) -> JsonRpcException:
    with pytest.raises(JsonRpcException) as info:
        call()
    return info.value


def test_initialize_advertises_the_features(client: Client) -> None:
    caps = client.initialize_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.code_action_provider.resolve_provider is True
    assert set(caps.execute_command_provider.commands) >= {"katpilot.ask", "katpilot.explain", "katpilot.applyAction"}
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert client.initialize_result.server_info.name == "katpilot"


def test_inline_completion_on_the_embedded_model(client: Client) -> None:
    uri, _ = open_copy(client)
    result = client.inline(uri, 12, 4)
    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text.strip()
    assert not any(tag in item.insert_text for tag in TAGS)
    assert "\n\n" not in item.insert_text.strip("\n"), "cut at the first blank line"
    assert "```" not in item.insert_text
    assert item.range == types.Range(types.Position(12, 4), types.Position(12, 4))


def test_completion_for_older_clients_is_one_item_with_an_edit(client: Client) -> None:
    uri, _ = open_copy(client)
    params = types.CompletionParams(types.TextDocumentIdentifier(uri), types.Position(12, 4))
    result = client.request(types.TEXT_DOCUMENT_COMPLETION, params)
    assert len(result.items) == 1
    assert result.items[0].text_edit.new_text.strip()
    assert result.items[0].text_edit.range.start == types.Position(12, 4)


def test_incremental_changes_are_applied_to_the_server_copy(client: Client) -> None:
    uri, _ = open_copy(client, "x = 1\n")
    change = types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(1, 0), types.Position(1, 0)), text="def double(y):\n    "
    )
    client.notify(
        types.TEXT_DOCUMENT_DID_CHANGE,
        types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(version=2, uri=uri), [change]),
    )
    # Line 2 exists only after the change: the request would be out of range on the old text.
    result = client.inline(uri, 2, 4)
    assert isinstance(result.items, (list, tuple))


def test_code_action_on_the_enclosing_function_resolves_to_a_workspace_edit(client: Client) -> None:
    uri, _ = open_copy(client)
    here = types.Range(types.Position(6, 8), types.Position(6, 8))  # inside mean()
    params = types.CodeActionParams(types.TextDocumentIdentifier(uri), here, types.CodeActionContext(diagnostics=[]))
    actions = client.request(types.TEXT_DOCUMENT_CODE_ACTION, params)
    titles = [a.title for a in actions]
    assert titles == ["katpilot: Explain", "katpilot: Fix", "katpilot: Add docstring", "katpilot: Write tests"]
    fix = next(a for a in actions if a.title == "katpilot: Fix")
    assert fix.data["first"] == 4 and fix.data["last"] == 8  # mean() spans lines 4..8
    client.progress.clear()
    resolved = client.request(types.CODE_ACTION_RESOLVE, fix)
    (change,) = resolved.edit.document_changes
    assert change.text_document.uri == uri and change.text_document.version == 1
    (edit,) = change.edits
    assert edit.range == types.Range(types.Position(4, 0), types.Position(9, 0))
    assert edit.new_text.strip()
    assert not any(tag in edit.new_text for tag in TAGS)
    kinds = [v.get("kind") for v in client.progress]
    assert kinds[0] == "begin" and "end" in kinds


def test_write_tests_creates_the_test_file(client: Client, workspace: Path) -> None:
    uri, path = open_copy(client)
    params = types.CodeActionParams(
        types.TextDocumentIdentifier(uri),
        types.Range(types.Position(1, 4), types.Position(1, 4)),
        types.CodeActionContext(diagnostics=[], only=[types.CodeActionKind.Source]),
    )
    (action,) = client.request(types.TEXT_DOCUMENT_CODE_ACTION, params)
    resolved = client.request(types.CODE_ACTION_RESOLVE, action)
    create, insert = resolved.edit.document_changes
    assert create.kind == "create"
    assert create.uri == (path.parent / f"test_{path.stem}.py").as_uri()
    assert insert.edits[0].new_text.strip()


def test_ask_returns_answer_mode_and_stats(client: Client) -> None:
    uri, _ = open_copy(client)
    selection = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
    result = client.request(
        types.WORKSPACE_EXECUTE_COMMAND,
        types.ExecuteCommandParams(
            "katpilot.ask", [{"question": "What does add return?", "uri": uri, "range": selection}]
        ),
    )
    assert result["answer"].strip()
    assert result["mode"] == "off" and result["decided_by"] == "user"
    assert 0 < result["stats"]["completion_tokens"] <= 64
    forced = client.request(
        types.WORKSPACE_EXECUTE_COMMAND,
        types.ExecuteCommandParams("katpilot.ask", [{"question": "Is 7 prime?", "think": "on"}]),
    )
    assert forced["mode"] == "on" and forced["decided_by"] == "user"
    # The same object as `katpilot ask --json` (Response.to_dict).
    assert set(forced) == {
        "judge",
        "think",
        "answer",
        "mode",
        "decided_by",
        "p_on",
        "threshold",
        "profile",
        "model",
        "stats",
        "notices",
    }


def test_explain_is_shown_with_show_message(client: Client) -> None:
    uri = client.open(client.root / "calc.py", CALC_PY)
    data = {"action": "explain", "uri": uri, "version": 1, "first": 0, "last": 1, "diagnostics": []}
    client.messages.clear()
    result = client.request(types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams("katpilot.explain", [data]))
    deadline = time.monotonic() + 10
    while not client.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.messages and client.messages[-1].type == types.MessageType.Info
    assert client.messages[-1].message == result["answer"]


def cancel_once_answering(client: Client, method: str, params: object) -> str:
    """Send a long request, cancel it once the answer streams; the progress's end message."""
    client.notify(
        types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams({"katpilot": {"max_tokens": 1500}})
    )
    try:
        client.progress.clear()
        msg_id = str(uuid.uuid4())
        future = client.send(method, params, msg_id=msg_id)
        deadline = time.monotonic() + 60
        while not any(v.get("message") == "answering…" for v in client.progress) and time.monotonic() < deadline:
            time.sleep(0.02)
        client.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        with pytest.raises(JsonRpcException) as info:
            future.result(timeout=60)
        assert info.value.code == -32800  # RequestCancelled
        while not any(v.get("kind") == "end" for v in client.progress) and time.monotonic() < deadline:
            time.sleep(0.02)
        return next(v for v in client.progress if v.get("kind") == "end")["message"]
    finally:
        client.notify(
            types.WORKSPACE_DID_CHANGE_CONFIGURATION,
            types.DidChangeConfigurationParams({"katpilot": {"max_tokens": 64}}),
        )


def test_cancel_request_stops_the_generation(client: Client) -> None:
    uri, _ = open_copy(client)
    here = types.Range(types.Position(0, 0), types.Position(1, 16))
    params = types.CodeActionParams(types.TextDocumentIdentifier(uri), here, types.CodeActionContext(diagnostics=[]))
    tests_action = next(
        a for a in client.request(types.TEXT_DOCUMENT_CODE_ACTION, params) if a.title == "katpilot: Write tests"
    )
    end = cancel_once_answering(client, types.CODE_ACTION_RESOLVE, tests_action)
    assert end.startswith("cancelled after "), end
    assert int(end.split()[2]) < 1500
    # The model thread is free again: the next request is served.
    assert client.inline(uri, 12, 4).items is not None


def test_cancelling_a_command_stops_its_generation(client: Client) -> None:
    """pygls runs commands as an inner task; the client's cancel must still reach the model."""
    ask = types.ExecuteCommandParams("katpilot.ask", [{"question": "Write a long story about a lighthouse keeper."}])
    end = cancel_once_answering(client, types.WORKSPACE_EXECUTE_COMMAND, ask)
    assert end.startswith("cancelled after "), end


def test_a_selection_inside_one_line_means_the_enclosing_function(client: Client) -> None:
    uri, _ = open_copy(client)
    within_line = types.Range(types.Position(6, 4), types.Position(6, 9))  # Helix selects a character at least
    params = types.CodeActionParams(
        types.TextDocumentIdentifier(uri), within_line, types.CodeActionContext(diagnostics=[])
    )
    fix = next(a for a in client.request(types.TEXT_DOCUMENT_CODE_ACTION, params) if a.title == "katpilot: Fix")
    assert (fix.data["first"], fix.data["last"]) == (4, 8)
    whole_line = types.Range(types.Position(6, 0), types.Position(7, 0))
    params = types.CodeActionParams(
        types.TextDocumentIdentifier(uri), whole_line, types.CodeActionContext(diagnostics=[])
    )
    fix = next(a for a in client.request(types.TEXT_DOCUMENT_CODE_ACTION, params) if a.title == "katpilot: Fix")
    assert (fix.data["first"], fix.data["last"]) == (6, 6)


def test_a_newer_completion_drops_the_older_one(client: Client) -> None:
    uri, _ = open_copy(client)
    client.notify(types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams({"debounce_ms": 400}))
    try:
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(12, 4),
        )
        first = client.send(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
        second = client.send(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
        assert not first.result(timeout=60).items
        assert len(second.result(timeout=60).items) == 1
    finally:
        client.notify(types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams({"debounce_ms": 0}))


def test_requests_on_unopened_documents_and_bad_positions_are_errors(client: Client) -> None:
    missing = (client.root / "never_opened.py").as_uri()
    error = error_of(lambda: client.inline(missing, 0, 0))
    assert error.code == -32602 and "didOpen" in error.message
    uri, _ = open_copy(client)
    error = error_of(lambda: client.inline(uri, 999, 0))
    assert error.code == -32602 and "outside" in error.message
    # Past the end of a line means the end of that line (LSP): served.
    assert client.inline(uri, 0, 500).items is not None


def test_binary_and_oversized_documents_are_refused_with_the_reason(client: Client) -> None:
    uri, _ = open_copy(client, "a = 1\x00\x00\n")
    error = error_of(lambda: client.inline(uri, 0, 0))
    assert error.code == -32803 and "binary" in error.message
    uri, _ = open_copy(client, "x = 1\n" * 100)
    client.notify(types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams({"max_file_bytes": 100}))
    try:
        error = error_of(lambda: client.inline(uri, 1, 0))
        assert error.code == -32803 and "max_file_bytes" in error.message and "600" in error.message
    finally:
        client.notify(
            types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams({"max_file_bytes": 1_000_000})
        )


def test_bad_settings_are_reported_and_the_rest_applies(client: Client) -> None:
    client.messages.clear()
    client.notify(
        types.WORKSPACE_DID_CHANGE_CONFIGURATION,
        types.DidChangeConfigurationParams(
            {"katpilot": {"threshold": 7, "thinkk": "on", "debounce_ms": -1, "budget": 5}}
        ),
    )
    deadline = time.monotonic() + 10
    while len(client.messages) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    text = " | ".join(m.message for m in client.messages)
    assert "threshold" in text and "out of range" in text
    assert "'thinkk'" in text
    assert "debounce_ms" in text
    uri, _ = open_copy(client)
    assert client.inline(uri, 12, 4).items is not None  # still serving


def test_edits_never_touch_files_outside_the_workspace(client: Client, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text(CALC_PY)
    uri = client.open(outside, CALC_PY)
    params = types.CodeActionParams(
        types.TextDocumentIdentifier(uri),
        types.Range(types.Position(0, 0), types.Position(1, 10)),
        types.CodeActionContext(diagnostics=[]),
    )
    actions = client.request(types.TEXT_DOCUMENT_CODE_ACTION, params)
    assert [a.title for a in actions] == ["katpilot: Explain"]
    forged = types.CodeAction(
        title="katpilot: Fix", data={"action": "fix", "uri": uri, "version": 1, "first": 0, "last": 1}
    )
    error = error_of(lambda: client.request(types.CODE_ACTION_RESOLVE, forged))
    assert "outside the workspace" in error.message
    assert outside.read_text() == CALC_PY


def test_a_completion_model_of_its_own_is_loaded_for_completions_only(client: Client, tmp_path: Path) -> None:
    missing = tmp_path / "coder.gguf"
    client.notify(
        types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams({"completion_model": str(missing)})
    )
    try:
        uri, _ = open_copy(client)
        error = error_of(lambda: client.inline(uri, 12, 4))
        assert error.code == -32803 and str(missing) in error.message
        result = client.request(
            types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams("katpilot.ask", [{"question": "Hi?"}])
        )
        assert result["answer"]  # questions still use the main model
    finally:
        client.notify(
            types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams({"completion_model": None})
        )
    assert client.inline(uri, 12, 4).items
