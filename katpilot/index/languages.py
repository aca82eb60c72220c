"""The languages the index parses: file extensions, grammars (from wheels) and definition queries.

Each query captures a definition node under a capture named after its kind and the node holding
its name as `@name`. Kinds in CONTAINER_KINDS (a Rust `impl`, a C++ `namespace`) only give their
members a parent; they are not definitions of their own. The queries are ours; grammars come
from the per-language `tree-sitter-<lang>` wheels, which carry their compiled parsers (no
download at run time).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath

import tree_sitter as ts

CONTAINER_KINDS = frozenset({"impl", "namespace"})
# Kinds whose functions are methods (a function defined inside one of these is a method).
CLASS_KINDS = frozenset({"class", "struct", "interface", "trait", "impl", "enum"})

_PYTHON = """
(class_definition name: (identifier) @name) @class
(function_definition name: (identifier) @name) @function
"""

_JS_COMMON = """
(function_declaration name: (identifier) @name) @function
(generator_function_declaration name: (identifier) @name) @function
(method_definition name: (property_identifier) @name) @method
(variable_declarator name: (identifier) @name value: [(arrow_function) (function_expression)]) @function
"""

_JAVASCRIPT = (
    _JS_COMMON
    + """
(class_declaration name: (identifier) @name) @class
"""
)

_TYPESCRIPT = (
    _JS_COMMON
    + """
(class_declaration name: (type_identifier) @name) @class
(abstract_class_declaration name: (type_identifier) @name) @class
(interface_declaration name: (type_identifier) @name) @interface
(type_alias_declaration name: (type_identifier) @name) @type
(enum_declaration name: (identifier) @name) @enum
(function_signature name: (identifier) @name) @function
(method_signature name: (property_identifier) @name) @method
(abstract_method_signature name: (property_identifier) @name) @method
"""
)

_GO = """
(function_declaration name: (identifier) @name) @function
(method_declaration name: (field_identifier) @name) @method
(type_spec name: (type_identifier) @name) @type
"""

_RUST = """
(function_item name: (identifier) @name) @function
(function_signature_item name: (identifier) @name) @function
(struct_item name: (type_identifier) @name) @struct
(enum_item name: (type_identifier) @name) @enum
(union_item name: (type_identifier) @name) @struct
(trait_item name: (type_identifier) @name) @trait
(type_item name: (type_identifier) @name) @type
(mod_item name: (identifier) @name) @module
(macro_definition name: (identifier) @name) @macro
(impl_item type: (_) @name) @impl
"""

_JAVA = """
(class_declaration name: (identifier) @name) @class
(interface_declaration name: (identifier) @name) @interface
(enum_declaration name: (identifier) @name) @enum
(record_declaration name: (identifier) @name) @class
(annotation_type_declaration name: (identifier) @name) @interface
(method_declaration name: (identifier) @name) @method
(constructor_declaration name: (identifier) @name) @method
"""

# C and C++ function names sit at the bottom of a chain of declarators (pointers, references,
# qualified names): the node is captured here and its name found by `declarator_name`.
_C_COMMON = """
(function_definition) @function
(declaration declarator: (function_declarator) @name) @function
(struct_specifier name: (type_identifier) @name body: (_)) @struct
(union_specifier name: (type_identifier) @name body: (_)) @struct
(enum_specifier name: (type_identifier) @name body: (_)) @enum
(type_definition declarator: (type_identifier) @name) @type
(preproc_function_def name: (identifier) @name) @macro
"""

_CPP = (
    _C_COMMON
    + """
(class_specifier name: (type_identifier) @name body: (_)) @class
(namespace_definition name: (namespace_identifier) @name) @namespace
(field_declaration declarator: (function_declarator) @name) @method
"""
)


@dataclass(frozen=True)
class LanguageSpec:
    """One language: where its grammar lives and how to find its definitions."""

    name: str
    extensions: tuple[str, ...]
    module: str
    factory: str
    definitions: str
    # Comment node types: the comment lines right above a definition are its docstring.
    comments: tuple[str, ...] = ("comment",)
    line_comment: str = "//"


LANGUAGES: dict[str, LanguageSpec] = {
    spec.name: spec
    for spec in (
        LanguageSpec("python", (".py", ".pyi"), "tree_sitter_python", "language", _PYTHON, line_comment="#"),
        LanguageSpec("javascript", (".js", ".mjs", ".cjs", ".jsx"), "tree_sitter_javascript", "language", _JAVASCRIPT),
        LanguageSpec(
            "typescript", (".ts", ".mts", ".cts"), "tree_sitter_typescript", "language_typescript", _TYPESCRIPT
        ),
        LanguageSpec("tsx", (".tsx",), "tree_sitter_typescript", "language_tsx", _TYPESCRIPT),
        LanguageSpec("go", (".go",), "tree_sitter_go", "language", _GO),
        LanguageSpec("rust", (".rs",), "tree_sitter_rust", "language", _RUST, ("line_comment", "block_comment")),
        LanguageSpec("java", (".java",), "tree_sitter_java", "language", _JAVA, ("line_comment", "block_comment")),
        LanguageSpec("c", (".c", ".h"), "tree_sitter_c", "language", _C_COMMON),
        LanguageSpec(
            "cpp",
            (".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp"),
            "tree_sitter_cpp",
            "language",
            _CPP,
        ),
    )
}

_BY_EXTENSION = {ext: spec.name for spec in LANGUAGES.values() for ext in spec.extensions}


def language_for(path: str | PurePath) -> str | None:
    """The language of a file by its extension, or None when the index does not parse it."""
    return _BY_EXTENSION.get(os.path.splitext(path)[1].lower())  # not PurePath: the walk asks for every file


def line_comment(path: str | PurePath) -> str:
    """The line-comment mark of a file's language ("#" for Python and unknown text files)."""
    language = language_for(path)
    return LANGUAGES[language].line_comment if language else "#"


@cache
def grammar(name: str) -> ts.Language:
    """The compiled grammar of a language, loaded once per process."""
    spec = LANGUAGES[name]
    module = importlib.import_module(spec.module)
    return ts.Language(getattr(module, spec.factory)())


@cache
def definitions_query(name: str) -> ts.Query:
    return ts.Query(grammar(name), LANGUAGES[name].definitions)


@cache
def identifiers_query(name: str) -> ts.Query:
    """Every identifier-like leaf: the references of a stretch of code."""
    kinds = _IDENTIFIER_KINDS[name]
    return ts.Query(grammar(name), "\n".join(f"({kind}) @ref" for kind in kinds))


_IDENTIFIER_KINDS: dict[str, tuple[str, ...]] = {
    "python": ("identifier",),
    "javascript": ("identifier", "property_identifier"),
    "typescript": ("identifier", "property_identifier", "type_identifier"),
    "tsx": ("identifier", "property_identifier", "type_identifier"),
    "go": ("identifier", "field_identifier", "type_identifier"),
    "rust": ("identifier", "field_identifier", "type_identifier"),
    "java": ("identifier", "type_identifier"),
    "c": ("identifier", "field_identifier", "type_identifier"),
    "cpp": ("identifier", "field_identifier", "type_identifier", "namespace_identifier"),
}
