"""Questions about a repository whose answers the index knows: where is X defined, what calls Y.

Generated from any repository the user points at (`--repo`), so a team measures the model on its own
code. The model gets what katpilot would show it when asked (the index's search hits for the
question, with the definitions that hold the answer among them, in shuffled order) and must read the
answer out of that context. Answers are checked by name (`mentions_any`), since they sit in a sentence.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem
from katpilot.index import RepoIndex
from katpilot.index.parse import Definition

DEFAULT_SIZE = 40  # half "where is X defined", half "what calls Y" (fewer if the repository has fewer)
CONTEXT_SNIPPETS = 4  # search hits shown with each question
_ASKABLE_KINDS = ("function", "method", "class", "struct", "interface", "trait", "enum")


def repo_questions(root: Path, seed: int, size: int = DEFAULT_SIZE) -> list[EvalItem]:
    """Up to `size` questions about the repository at `root`, alternating the two kinds."""
    with RepoIndex(root) as index:
        index.refresh()
        items = questions_from_index(index, seed, size)
    if not items:
        raise KatpilotError(
            f"the index found no definitions to ask about in {root}",
            "give --repo a repository with source files in a language the index knows",
        )
    return items


def questions_from_index(index: RepoIndex, seed: int, size: int = DEFAULT_SIZE) -> list[EvalItem]:
    """`repo_questions` from an index the caller has open and fresh (the trainer's); [] when none.

    Which names are asked depends on the seed (and `size`); each question's prompt on the seed and
    its own id only, so a run resumed with another size asks its questions as before.
    """
    unique = _uniquely_named(index.definitions())
    random.Random(f"katpilot-repo:{seed}").shuffle(unique)
    where = [_where_defined(index, d, seed) for d in unique[: size - size // 2]]
    calls: list[EvalItem] = []
    for definition in unique:
        if len(calls) >= size // 2:
            break
        if definition.kind in ("function", "method"):
            item = _who_calls(index, definition, seed)
            if item is not None:
                calls.append(item)
    items = [q for pair in zip(where, calls, strict=False) for q in pair]
    items += where[len(calls) :] + calls[len(where) :]
    return items[:size]


def _uniquely_named(definitions: list[Definition]) -> list[Definition]:
    """Definitions whose name is defined once in the repository (so the answer is one place)."""
    counts: dict[str, int] = {}
    for d in definitions:
        counts[d.name] = counts.get(d.name, 0) + 1
    return [
        d
        for d in definitions
        if counts[d.name] == 1 and d.kind in _ASKABLE_KINDS and len(d.name) >= 4 and not d.name.startswith("__")
    ]


def _where_defined(index: RepoIndex, definition: Definition, seed: int) -> EvalItem:
    question = (
        f"In this repository, which file defines the {definition.kind} `{definition.name}`? Answer with its path."
    )
    item_id = f"repo-where-{definition.path}:{definition.qualified_name}"
    return EvalItem(
        id=item_id,
        prompt=_with_context(index, question, definition.name, [definition], _rng(seed, item_id)),
        verifier="mentions",
        accepted=(definition.path,),
        meta={"kind": "where-defined", "name": definition.qualified_name},
    )


def _who_calls(index: RepoIndex, definition: Definition, seed: int) -> EvalItem | None:
    """A question naming a function; any definition that calls it answers. None if nothing calls it."""
    callers: dict[str, Definition] = {}
    call = re.compile(rf"(?<![\w]){re.escape(definition.name)}\s*\(")
    for path in sorted(index.references(definition.name)):
        try:
            lines = index.read_text(path).text.splitlines()
        except KatpilotError:
            continue
        for row, line in enumerate(lines):
            if call.search(line) and not (path == definition.path and row == definition.start[0]):
                caller = index.enclosing_definition(path, row)
                if caller is not None and caller.name != definition.name:
                    callers.setdefault(caller.qualified_name, caller)
    if not callers:
        return None
    question = f"In this repository, name a function or method that calls `{definition.name}`."
    shown = [definition, *list(callers.values())[:2]]
    accepted = sorted({*callers, *(c.name for c in callers.values())})
    item_id = f"repo-calls-{definition.path}:{definition.qualified_name}"
    return EvalItem(
        id=item_id,
        prompt=_with_context(index, question, definition.name, shown, _rng(seed, item_id)),
        verifier="mentions",
        accepted=tuple(accepted),
        meta={"kind": "who-calls", "name": definition.qualified_name},
    )


def _rng(seed: int, item_id: str) -> random.Random:
    """The random order of one question's snippets: from the seed and the question's id alone."""
    return random.Random(f"katpilot-repo:{seed}:{item_id}")


def _with_context(index: RepoIndex, question: str, query: str, needed: list[Definition], rng: random.Random) -> str:
    """The question after the snippets that answer it and the search's other hits, shuffled."""
    chosen = {(d.path, d.start): d for d in needed}
    for hit in index.search(query, limit=CONTEXT_SNIPPETS):
        if len(chosen) >= max(CONTEXT_SNIPPETS, len(needed)):
            break
        chosen.setdefault((hit.definition.path, hit.definition.start), hit.definition)
    snippets = list(chosen.values())
    rng.shuffle(snippets)
    blocks = [f"{d.path}:{d.start[0] + 1}\n```\n{index.excerpt(d)}\n```" for d in snippets]
    return "Code from the repository:\n\n" + "\n\n".join(blocks) + f"\n\n{question}"
