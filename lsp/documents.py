"""The editor's open documents as the server sees them: checked access and position conversion.

pygls keeps the text (incremental `didChange` applied to its own copy); this module decides what
a request may do with it. A document must be open, text, and under the size limit; a position must
lie inside it. Each refusal is a `RequestRefused` whose message names the problem and the fix, sent
to the client as a JSON-RPC error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.workspace import TextDocument, Workspace

# LSP's RequestFailed: the request was valid but the server cannot do it (too large, binary, ...).
REQUEST_FAILED = -32803


class RequestRefused(JsonRpcException):
    """A request the server will not carry out, with the reason and the fix in one line."""

    CODE = REQUEST_FAILED


class BadPosition(JsonRpcInvalidParams):
    """A position or range outside the document."""


@dataclass(frozen=True)
class OpenDocument:
    """One open document, checked: its URI, text, file path (None if not a file) and language id."""

    uri: str
    text: str
    path: Path | None
    language_id: str
    encoding: str  # the negotiated position encoding: utf-8, utf-16 or utf-32
    version: int | None = None  # the editor's version of this text (None: read from disk)

    @property
    def lines(self) -> list[str]:
        """Lines without their line breaks; a trailing newline gives a last, empty line."""
        return self.text.split("\n")

    def line_text(self, first: int, last: int) -> str:
        """Lines first..last (0-based, inclusive) without the final line break."""
        return "\n".join(self.lines[first : last + 1])

    def range_from_json(self, value: Any) -> types.Range:  # decoded JSON of any shape: checked below
        """A Range given as plain JSON (a command's argument), or a refusal saying what is wrong."""
        try:
            start, end = value["start"], value["end"]
            return types.Range(
                types.Position(start["line"], start["character"]), types.Position(end["line"], end["character"])
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise JsonRpcInvalidParams(
                'a range must be {"start": {"line": L, "character": C}, "end": {...}} with integers'
            ) from exc

    def offset(self, position: types.Position) -> int:
        """Index into `text` of an LSP position; past the end of a line means its end (LSP rule)."""
        lines = self.lines
        if position.line < 0 or position.character < 0:
            raise BadPosition(f"position {position.line}:{position.character} is negative")
        if position.line >= len(lines):
            raise BadPosition(
                f"line {position.line} is outside {self.uri} ({len(lines)} lines): resend the request "
                "after syncing the document"
            )
        start = sum(len(line) + 1 for line in lines[: position.line])
        line = lines[position.line].rstrip("\r")
        units = 0
        for index, char in enumerate(line):
            if units >= position.character:
                return start + index
            units += _units(char, self.encoding)
        return start + len(line)

    def position(self, offset: int) -> types.Position:
        """The LSP position of an index into `text`, in the negotiated encoding."""
        before = self.text[:offset]
        row = before.count("\n")
        column_text = before[before.rfind("\n") + 1 :]
        return types.Position(row, sum(_units(ch, self.encoding) for ch in column_text))

    def byte_column(self, offset: int) -> tuple[int, int]:
        """(row, UTF-8 byte column) of an index, the index's own position convention."""
        before = self.text[:offset]
        row = before.count("\n")
        return row, len(before[before.rfind("\n") + 1 :].encode("utf-8"))

    def line_range(self, first: int, last: int) -> types.Range:
        """The whole lines first..last (0-based, inclusive), including the last line break."""
        lines = self.lines
        last = min(last, len(lines) - 1)
        if last + 1 < len(lines):
            end = types.Position(last + 1, 0)
        else:
            end = self.position(len(self.text))
        return types.Range(types.Position(first, 0), end)


def _units(char: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(char.encode("utf-8"))
    if encoding == "utf-16":
        return 2 if ord(char) > 0xFFFF else 1
    return 1


def uri_to_path(uri: str) -> Path | None:
    """The file path of a `file:` URI, else None (untitled buffers, other schemes)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


def open_document(workspace: Workspace, uri: str, max_bytes: int) -> OpenDocument:
    """The open document at `uri`, or a refusal saying why it cannot be used."""
    if uri not in workspace.text_documents:
        raise JsonRpcInvalidParams(f"{uri} is not open: send textDocument/didOpen before requests on it")
    document: TextDocument = workspace.text_documents[uri]
    text = document.source
    size = len(text.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise RequestRefused(
            f"{uri} is {size:,} bytes, over the {max_bytes:,}-byte limit: raise the max_file_bytes setting to use it"
        )
    if "\x00" in text:
        raise RequestRefused(f"{uri} looks binary (it contains NUL characters): katpilot works on text files")
    negotiated = workspace.position_encoding
    encoding = str(getattr(negotiated, "value", negotiated) or "utf-16")
    return OpenDocument(uri, text, uri_to_path(uri), document.language_id or "", encoding, document.version)


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether a path lies within one of the workspace folders (symlinks resolved)."""
    resolved = path.resolve()
    return any(resolved == root or root in resolved.parents for root in roots)


def relative_label(doc: OpenDocument, roots: list[Path]) -> str:
    """The document's path relative to its workspace folder, for prompts; the URI otherwise."""
    if doc.path is None:
        return doc.uri
    for root in roots:
        if inside(doc.path, [root]):
            return doc.path.resolve().relative_to(root).as_posix()
    return doc.path.name
