"""From source text to definitions and references, with tree-sitter.

Positions are tree-sitter's: 0-based rows, and columns in UTF-8 bytes within the row (equal to
characters for ASCII). Front ends convert for display (1-based lines) or for LSP (UTF-16 columns).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

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


class Definition(NamedTuple):
    """A function, method, class (or struct, interface, ...) defined in a file.

    A named tuple rather than a dataclass: the cache loads tens of thousands at once, and tuples
    are cheaper to make.
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


_parsers: dict[str, ts.Parser] = {}


def parse_tree(language: str, source: bytes) -> ts.Tree:
    parser = _parsers.get(language)
    if parser is None:
        parser = _parsers[language] = ts.Parser(grammar(language))
    return parser.parse(source)


# A definition as the cache keeps it, in a file's JSON array: name, kind, parent, start row and
# column, end row and column, signature, docstring. Extraction builds these directly (a cold index
# turns tens of thousands of them into JSON); Definitions are made when someone asks.
Row = tuple[str, str, str, int, int, int, int, str, str]


def extract_definitions(language: str, path: str, source: bytes, tree: ts.Tree) -> list[Definition]:
    """Every definition of the tree, ordered by position, each knowing its enclosing class."""
    return definitions_from_rows(path, definition_rows(language, source, tree))


def definition_rows(language: str, source: bytes, tree: ts.Tree) -> list[Row]:
    """`extract_definitions`, as rows."""
    root = tree.root_node
    if language == "python" and not root.has_error:
        rows: list[Row] = []
        _python_rows(source, root, "", "", rows)
        return rows
    return _queried_rows(language, source, root)


def definitions_from_rows(path: str, rows: Iterable[Sequence[Any]]) -> list[Definition]:
    """A file's Definitions from its rows (tuples, or lists as JSON gives them back)."""
    return [
        Definition(path, name, kind, parent, (start_row, start_col), (end_row, end_col), signature, doc)
        for name, kind, parent, start_row, start_col, end_row, end_col, signature, doc in rows
    ]


def _queried_rows(language: str, source: bytes, root: ts.Node) -> list[Row]:
    """The definitions the language's query finds; the enclosing one from the nesting of ranges."""
    found: list[tuple[ts.Node, str, str]] = []  # (node, kind, name)
    cursor = ts.QueryCursor(definitions_query(language))
    for _pattern, captures in cursor.matches(root):
        kind, nodes = next((k, v) for k, v in captures.items() if k != "name")
        node = nodes[0]
        name_nodes = captures.get("name")
        name = _name_text(name_nodes[0] if name_nodes else node, source)
        if not name:
            continue
        found.append((node, _refine_kind(language, kind, node), name))
    found.sort(key=lambda item: (item[0].start_byte, -item[0].end_byte))

    rows: list[Row] = []
    stack: list[tuple[int, str, str]] = []  # enclosing (end_byte, kind, name)
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
        rows.append(
            (
                name,
                kind,
                parent,
                *node.start_point,
                *node.end_point,
                _signature(node, source),
                _docstring(language, node, source),
            )
        )
    return rows


# Python node types: the kind of definition, or "" for a statement that holds statements. In a
# tree without syntax errors a definition can only be a statement, so walking these (and skipping
# expressions, most of a tree) finds them all.
_PYTHON_ROLES = {
    "function_definition": "function",
    "class_definition": "class",
    **dict.fromkeys(
        (
            "block",
            "decorated_definition",
            "if_statement",
            "elif_clause",
            "else_clause",
            "for_statement",
            "while_statement",
            "try_statement",
            "except_clause",
            "except_group_clause",
            "finally_clause",
            "with_statement",
            "match_statement",
            "case_clause",
        ),
        "",
    ),
}


def _python_rows(source: bytes, node: ts.Node, parent_kind: str, parent: str, rows: list[Row]) -> None:
    """Python's definitions under a statement, in order; what the query finds, several times faster.

    The query visits every node of the tree; this visits statements only, and only those whose
    text holds `def` or `class` (a keyword every definition starts with). Trees with syntax errors
    take the query: error recovery can leave a definition anywhere. Node kinds are compared by
    id: `Node.type` makes a new string each time.
    """
    roles = _python_kinds().roles
    for child in node.named_children:
        kind = roles.get(child.kind_id)
        if kind is None:
            continue
        if not kind:  # a statement that holds statements
            if _may_define(source, child):
                _python_rows(source, child, parent_kind, parent, rows)
            continue
        name_node = child.child_by_field_name("name")
        body = child.child_by_field_name("body")
        # Required fields of a def or class; a tree with syntax errors never gets here (see above).
        assert name_node is not None and body is not None
        name = source[name_node.start_byte : name_node.end_byte].decode("utf-8", "replace")
        if kind == "function" and parent_kind == "class":
            kind = "method"
        start, body_start = child.start_byte, body.start_byte
        head_end = body_start if body_start > start else child.end_byte
        rows.append(
            (
                name,
                kind,
                parent,
                *child.start_point,
                *child.end_point,
                _head(source, start, head_end),
                _python_docstring(body, source),
            )
        )
        if _may_define(source, body):
            _python_rows(source, body, kind, name, rows)


class _PythonKinds(NamedTuple):
    roles: dict[int, str]  # _PYTHON_ROLES by node kind id
    expression_statement: frozenset[int]
    string: frozenset[int]


@functools.cache
def _python_kinds() -> _PythonKinds:
    """The ids of the Python node kinds the walker looks at (a kind can have several ids)."""
    language = grammar("python")
    named = {
        kind_id: language.node_kind_for_id(kind_id)
        for kind_id in range(language.node_kind_count)
        if language.node_kind_is_named(kind_id)
    }
    return _PythonKinds(
        roles={kind_id: _PYTHON_ROLES[kind] for kind_id, kind in named.items() if kind in _PYTHON_ROLES},
        expression_statement=frozenset(i for i, kind in named.items() if kind == "expression_statement"),
        string=frozenset(i for i, kind in named.items() if kind == "string"),
    )


def _may_define(source: bytes, node: ts.Node) -> bool:
    """Whether a node's text holds `def` or `class` (a fast scan of the bytes)."""
    start, end = node.start_byte, node.end_byte
    return source.find(b"def", start, end) >= 0 or source.find(b"class", start, end) >= 0


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


def rows_to_json(rows: list[Row]) -> str:
    """A file's definitions as the index cache keeps them (the path is the row's)."""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def definitions_from_json(path: str, blob: str) -> list[Definition]:
    return definitions_from_rows(path, json.loads(blob))


# -- details ---------------------------------------------------------------------------------------


def _name_text(node: ts.Node, source: bytes) -> str:
    """The name a node stands for; C/C++ declarators are followed down to the identifier."""
    node = _declarator_name(node)
    text = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
    if node.type in ("generic_type", "scoped_type_identifier"):  # Rust `impl Foo<T>`, `impl a::Foo`
        text = text.split("<", 1)[0].rsplit("::", 1)[-1]
    return " ".join(text.split())


_DECLARATOR_LEAVES = {
    "identifier",
    "field_identifier",
    "qualified_identifier",
    "destructor_name",
    "operator_name",
    "type_identifier",
}


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
    return _head(source, node.start_byte, end)


def _head(source: bytes, start: int, end: int) -> str:
    """A definition's head (from its start to its body's start) on one line, shortened."""
    head = source[start : min(end, start + 4 * MAX_SIGNATURE_CHARS)]
    text = " ".join(head.decode("utf-8", "replace").split())
    text = text.rstrip("{").rstrip()
    if len(text) > MAX_SIGNATURE_CHARS:
        text = text[: MAX_SIGNATURE_CHARS - 1] + "…"
    return text


def _docstring(language: str, node: ts.Node, source: bytes) -> str:
    if language == "python":
        return _python_docstring(node.child_by_field_name("body"), source)
    comment_types = LANGUAGES[language].comments
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


def _python_docstring(body: ts.Node | None, source: bytes) -> str:
    """The first paragraph of the string that opens a body, if one does."""
    if body is None or body.named_child_count == 0:
        return ""
    kinds = _python_kinds()
    first = body.named_child(0)
    if first.kind_id not in kinds.expression_statement or first.named_child_count == 0:
        return ""
    string = first.named_child(0)
    if string.kind_id not in kinds.string:
        return ""
    text = source[string.start_byte : string.end_byte].decode("utf-8", "replace")
    text = _OPENING_QUOTE.sub("", text)
    text = _CLOSING_QUOTE.sub("", text)
    return _first_paragraph(text.strip().splitlines())


_OPENING_QUOTE = re.compile(r"^[rRbBuUfF]*('''|\"\"\"|'|\")")
_CLOSING_QUOTE = re.compile(r"('''|\"\"\"|'|\")$")


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
