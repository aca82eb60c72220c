"""Completion scheduling: debounce, the newest request per document wins, generation on the model thread.

Editors ask for a completion on nearly every keystroke. Each request waits `debounce_ms`; a newer
request for the same document sets the older one's cancel event, so a stale completion stops
before or during generation and answers "" instead of text for code the user has typed past.
"""

from __future__ import annotations

import asyncio
import threading

from lsprotocol import types

from lsp import generate
from lsp.documents import OpenDocument
from lsp.language_server import KatpilotLanguageServer
from lsp.settings import LspSettings
from lsp.work import describe_definition


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


def completion_job(
    ls: KatpilotLanguageServer, doc: OpenDocument, offset: int, settings: LspSettings, cancel: threading.Event
) -> str:
    """On the model thread: repository context, prompt, generation."""
    if cancel.is_set():
        return ""
    engine = ls.model.engine(settings.completion_settings(), "completion")
    repo_context: list[str] = []
    if doc.path is not None and ls.index is not None:
        row, _column = doc.byte_column(offset)
        repo_context = [describe_definition(d) for d in ls.index.definitions_near(doc.path, row, doc.text)]
    label = ls.label(doc)
    language = generate.language_name(label, doc.language_id)
    max_tokens = settings.completion_max_tokens
    ctx = generate.cursor_context(engine, doc.text, offset, label, language, repo_context, max_tokens)
    return generate.complete(
        engine, settings.base, ctx, generate.completion_sampling(settings.base, max_tokens), cancel
    )
