"""From source text to definitions and references, with tree-sitter.

Positions are tree-sitter's: 0-based rows, and columns in UTF-8 bytes within the row (equal to
characters for ASCII). Front ends convert for display (1-based lines) or for LSP (UTF-16 columns).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import tree_sitter as ts

from katpilot.index.languages import (
    CLASS_KINDS,
    CONTAINER_KINDS,
    LANGUAGES,
    definitions_query,
    grammar,
    identifiers_query,
)

MAX_SIGNATURE_CHARS = 200
MAX_DOC_CHARS = 300

# Identifier-like tokens for the reference graph: counted lexically over the (redacted) text,
# which is several times faster than walking every identifier node and, for ranking, nearly the
# same thing (the difference is names mentioned in comments and strings). Exact references at a
# position come from the tree (`references_in`).
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Definition(NamedTuple):
    """A function, method, class (or struct, interface, ...) defined in a file.

    A named tuple rather than a dataclass: tens of thousands cross from worker processes and
    into SQLite, and tuples pickle several times faster.
    """

    path: str  # relative to the repository root, with forward slashes
    name: str
    kind: str  # function, method, class, struct, interface, enum, trait, type, module, macro
    parent: str  # enclosing class/impl/namespace name, "" at top level
    start: tuple[int, int]  # (row, column) of the first character of the definition
    end: tuple[int, int]  # (row, column) just past its last character
    signature: str  # the head of the definition, up to its body, on one line
    doc: str  # its docstring or the comment right above it, first paragraph

    def contains(self, row: int, column: int) -> bool:
        return self.start <= (row, column) <= self.end

    @property
    def qualified_name(self) -> str:
        return f"{self.parent}.{self.name}" if self.parent else self.name


@dataclass(frozen=True)
class Reference:
    """An identifier used at a position."""

    name: str
    row: int
    column: int


@dataclass
class ParsedSource:
    definitions: list[Definition]
    reference_counts: Counter[str]


_parsers: dict[str, ts.Parser] = {}


def parse_tree(language: str, source: bytes) -> ts.Tree:
    parser = _parsers.get(language)
    if parser is None:
        parser = _parsers[language] = ts.Parser(grammar(language))
    return parser.parse(source)


def parse_source(language: str, path: str, text: str) -> ParsedSource:
    """Definitions (from the tree) and reference counts (lexical) of one file's text."""
    source = text.encode("utf-8")
    tree = parse_tree(language, source)
    return ParsedSource(extract_definitions(language, path, source, tree), Counter(_IDENT.findall(text)))


def extract_definitions(language: str, path: str, source: bytes, tree: ts.Tree) -> list[Definition]:
    """Every definition of the tree, ordered by position, each knowing its enclosing class."""
    found: list[tuple[ts.Node, str, str]] = []  # (node, kind, name)
    cursor = ts.QueryCursor(definitions_query(language))
    for _pattern, captures in cursor.matches(tree.root_node):
        kind, nodes = next((k, v) for k, v in captures.items() if k != "name")
        node = nodes[0]
        name_nodes = captures.get("name")
        name = _name_text(name_nodes[0] if name_nodes else node, source)
        if not name:
            continue
        found.append((node, _refine_kind(language, kind, node), name))
    found.sort(key=lambda item: (item[0].start_byte, -item[0].end_byte))

    definitions: list[Definition] = []
    stack: list[tuple[int, str, str]] = []  # enclosing (end_byte, kind, name)
    comment_types = LANGUAGES[language].comments
    for node, kind, name in found:
        while stack and stack[-1][0] <= node.start_byte:
            stack.pop()
        parent_kind, parent = (stack[-1][1], stack[-1][2]) if stack else ("", "")
        if kind == "function" and parent_kind in CLASS_KINDS:
            kind = "method"
        if language == "go" and kind == "method":
            parent = _go_receiver(node, source) or parent
        if language in ("c", "cpp") and "::" in name:  # `double Circle::area() { ... }`
            parent, _, name = name.rpartition("::")
            parent = parent.rpartition("::")[2]
            kind = "method" if kind == "function" else kind
        stack.append((node.end_byte, kind, name))
        if kind in CONTAINER_KINDS:
            continue
        definitions.append(
            Definition(
                path=path,
                name=name,
                kind=kind,
                parent=parent,
                start=(node.start_point[0], node.start_point[1]),
                end=(node.end_point[0], node.end_point[1]),
                signature=_signature(node, source),
                doc=_docstring(language, node, source, comment_types),
            )
        )
    return definitions


def references_in(language: str, source: bytes, first_row: int, last_row: int) -> list[Reference]:
    """Identifiers used between two rows (inclusive), from the tree: no comments, no strings."""
    tree = parse_tree(language, source)
    cursor = ts.QueryCursor(identifiers_query(language))
    cursor.set_point_range((max(first_row, 0), 0), (last_row + 1, 0))
    refs = []
    for node in cursor.captures(tree.root_node).get("ref", []):
        text = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
        refs.append(Reference(text, node.start_point[0], node.start_point[1]))
    refs.sort(key=lambda ref: (ref.row, ref.column))
    return refs


def definitions_to_json(definitions: list[Definition]) -> str:
    """A file's definitions as the index cache keeps them (the path is the row's)."""
    return json.dumps(
        [[d.name, d.kind, d.parent, *d.start, *d.end, d.signature, d.doc] for d in definitions],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def definitions_from_json(path: str, blob: str) -> list[Definition]:
    return [
        Definition(path, name, kind, parent, (start_row, start_col), (end_row, end_col), signature, doc)
        for name, kind, parent, start_row, start_col, end_row, end_col, signature, doc in json.loads(blob)
    ]


# -- details ---------------------------------------------------------------------------------------


def _name_text(node: ts.Node, source: bytes) -> str:
    """The name a node stands for; C/C++ declarators are followed down to the identifier."""
    node = _declarator_name(node)
    text = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
    if node.type in ("generic_type", "scoped_type_identifier"):  # Rust `impl Foo<T>`, `impl a::Foo`
        text = text.split("<", 1)[0].rsplit("::", 1)[-1]
    return " ".join(text.split())


_DECLARATOR_LEAVES = {"identifier", "field_identifier", "qualified_identifier", "destructor_name", "operator_name", "type_identifier"}


def _declarator_name(node: ts.Node) -> ts.Node:
    seen = 0
    while node.type not in _DECLARATOR_LEAVES and seen < 16:
        inner = node.child_by_field_name("declarator")
        if inner is None:
            break
        node = inner
        seen += 1
    return node


def _refine_kind(language: str, kind: str, node: ts.Node) -> str:
    if language == "go" and kind == "type":
        body = node.child_by_field_name("type")
        if body is not None and body.type == "struct_type":
            return "struct"
        if body is not None and body.type == "interface_type":
            return "interface"
    return kind


def _go_receiver(node: ts.Node, source: bytes) -> str:
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return ""
    text = source[receiver.start_byte : receiver.end_byte].decode("utf-8", "replace")
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text.split("[", 1)[0])
    return words[-1] if words else ""


def _signature(node: ts.Node, source: bytes) -> str:
    body = node.child_by_field_name("body")
    if body is None and node.type == "variable_declarator":  # const f = (a) => ...
        value = node.child_by_field_name("value")
        body = value.child_by_field_name("body") if value is not None else None
    end = body.start_byte if body is not None and body.start_byte > node.start_byte else node.end_byte
    head = source[node.start_byte : min(end, node.start_byte + 4 * MAX_SIGNATURE_CHARS)]
    text = " ".join(head.decode("utf-8", "replace").split())
    text = text.rstrip("{").rstrip()
    if len(text) > MAX_SIGNATURE_CHARS:
        text = text[: MAX_SIGNATURE_CHARS - 1] + "…"
    return text


def _docstring(language: str, node: ts.Node, source: bytes, comment_types: tuple[str, ...]) -> str:
    if language == "python":
        return _python_docstring(node, source)
    lines: list[str] = []
    anchor = node
    while anchor.parent is not None and anchor.parent.type in _WRAPPERS:
        anchor = anchor.parent  # the comment sits above `export const f = ...`, `type T struct`
    row = anchor.start_point[0]
    sibling = anchor.prev_sibling
    while sibling is not None:
        if sibling.type in ("attribute_item", "decorator", "annotation", "marker_annotation"):
            row = sibling.start_point[0]
            sibling = sibling.prev_sibling
            continue
        if sibling.type not in comment_types or sibling.end_point[0] < row - 1:
            break
        text = source[sibling.start_byte : sibling.end_byte].decode("utf-8", "replace")
        lines[:0] = _strip_comment(text)
        row = sibling.start_point[0]
        sibling = sibling.prev_sibling
    return _first_paragraph(lines)


def _python_docstring(node: ts.Node, source: bytes) -> str:
    body = node.child_by_field_name("body")
    if body is None or body.named_child_count == 0:
        return ""
    first = body.named_child(0)
    if first.type != "expression_statement" or first.named_child_count == 0:
        return ""
    string = first.named_child(0)
    if string.type != "string":
        return ""
    text = source[string.start_byte : string.end_byte].decode("utf-8", "replace")
    text = re.sub(r"^[rRbBuUfF]*('''|\"\"\"|'|\")", "", text)
    text = re.sub(r"('''|\"\"\"|'|\")$", "", text)
    return _first_paragraph(text.strip().splitlines())


# Nodes that wrap a definition without being one: its comment sits above the wrapper.
_WRAPPERS = frozenset(
    {"export_statement", "template_declaration", "type_declaration", "lexical_declaration", "variable_declaration"}
)

_COMMENT_MARKS = re.compile(r"^\s*(?:/\*\*?|\*/|\*|///?|//!|#)\s?")


def _strip_comment(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.rstrip()
        if line.endswith("*/"):
            line = line[:-2]
        out.append(_COMMENT_MARKS.sub("", line, count=1).strip())
    return out


def _first_paragraph(lines: list[str]) -> str:
    words: list[str] = []
    for line in lines:
        if not line.strip():
            if words:
                break
            continue
        words.append(line.strip())
    text = " ".join(words)
    return text if len(text) <= MAX_DOC_CHARS else text[: MAX_DOC_CHARS - 1] + "…"
