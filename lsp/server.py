"""`katpilot lsp`: a pygls language server for inline completion, code actions and questions.

Requests are handled on pygls' event loop; model work runs on the model thread and index lookups
on the index thread (`lsp.work`), so `$/cancelRequest`, newer completions and document changes are
read while a model generates. Every refusal is a JSON-RPC error whose message says what to do.

This module only assembles the server (lsp.language_server) with its handlers (lsp.handlers,
lsp.commands) and starts it; `katpilot/cli.py` imports `run` from here.
"""

from __future__ import annotations

import logging
import sys

from katpilot.config import Settings
from lsp.commands import register_commands
from lsp.handlers import register_features
from lsp.language_server import KatpilotLanguageServer
from lsp.refusals import quiet_refusals

__all__ = ["KatpilotLanguageServer", "build_server", "run"]


def build_server(settings: Settings) -> KatpilotLanguageServer:
    """The language server with every feature and command registered."""
    ls = KatpilotLanguageServer(settings)
    register_features(ls)
    register_commands(ls)
    return ls


def run(settings: Settings, tcp: tuple[str, int] | None = None) -> None:
    """Serve over stdio, or over TCP when `tcp` is given."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="katpilot lsp: %(message)s")
    quiet_refusals()
    server = build_server(settings)
    if tcp is None:
        server.start_io()
    else:
        server.start_tcp(*tcp)
