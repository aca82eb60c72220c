"""Lexical search over definitions: BM25 on the words of each definition's name, parent,
signature, docstring and path. Identifiers are split into words (`parse_http_header`,
`parseHttpHeader` -> parse, http, header) so a question in plain words finds code.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from katpilot.index.parse import Definition

K1 = 1.5
B = 0.75
# Words so common in code and questions that they only add noise.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "self",
        "the",
        "this",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "def",
        "function",
        "return",
        "none",
        "true",
        "false",
    ]
)
_WORD = re.compile(r"[A-Za-z][a-z]*|[A-Z]+(?![a-z])|\d+")


def words(text: str) -> list[str]:
    """Lower-case words of text and identifiers, camelCase and snake_case split apart."""
    return [w.lower() for w in _WORD.findall(text) if w.lower() not in STOP_WORDS and len(w) > 1]


@dataclass(frozen=True)
class Hit:
    definition: Definition
    score: float


class DefinitionSearch:
    """An in-memory BM25 index over a list of definitions."""

    def __init__(self, definitions: list[Definition]) -> None:
        self.definitions = definitions
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.lengths: list[int] = []
        for doc_id, d in enumerate(definitions):
            # The name counts twice: it is what a definition is about.
            terms = Counter(words(f"{d.name} {d.name} {d.parent} {d.signature} {d.doc} {d.path}"))
            self.lengths.append(sum(terms.values()))
            for term, tf in terms.items():
                self.postings[term].append((doc_id, tf))
        self.average_length = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        n = len(self.definitions)
        scores: dict[int, float] = defaultdict(float)
        for term in set(words(query)):
            postings = self.postings.get(term)
            if not postings:
                continue
            idf = math.log(1 + (n - len(postings) + 0.5) / (len(postings) + 0.5))
            for doc_id, tf in postings:
                norm = K1 * (1 - B + B * self.lengths[doc_id] / self.average_length)
                scores[doc_id] += idf * tf * (K1 + 1) / (tf + norm)
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return [Hit(self.definitions[doc_id], score) for doc_id, score in best]
