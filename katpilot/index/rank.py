"""Ranking definitions by how much the rest of the repository leans on them, and the repo map.

A graph of files: an edge from a file that uses a name to each file that defines it, weighted by
how often it is used (square root, so one file calling a helper 400 times does not drown the rest)
and by how telling the name is (long, specific names up; private and very common names down).
PageRank over that graph, personalised toward the files in focus, ranks the files; each file's rank
then flows along its edges to the definitions it uses, which ranks the definitions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from katpilot.index.parse import Definition
from katpilot.terms import estimate_tokens

if TYPE_CHECKING:
    import numpy as np

DAMPING = 0.85
ITERATIONS = 60
# A name defined in many files (run, get, __init__) says little about which file is meant.
COMMON_NAME_FILES = 5
IGNORED_NAME_FILES = 50
# With files in focus, the random surfer restarts from them this often: what they use ranks first.
FOCUS_RESTART_SHARE = 0.9
FOCUS_NAME_WEIGHT = 10.0
FOCUS_FILE_EDGE_WEIGHT = 20.0
SPECIFIC_NAME_WEIGHT = 4.0
PRIVATE_NAME_WEIGHT = 0.1
COMMON_NAME_WEIGHT = 0.1
SHORT_NAME_WEIGHT = 0.1
MIN_SPREAD_WEIGHT = 0.05


@dataclass(frozen=True)
class RankedDefinition:
    definition: Definition
    score: float


def _is_specific(name: str) -> bool:
    return len(name) >= 8 and ("_" in name.strip("_") or (name.lower() != name and name.upper() != name))


def _name_weight(name: str, definers: int, users: int, files: int, focus_names: frozenset[str]) -> float:
    # Like IDF: a name used in most files (a builtin, `self`, a one-letter variable) tells little.
    weight = max(math.log((files + 1) / (users + 1)), MIN_SPREAD_WEIGHT)
    if len(name) < 3:
        weight *= SHORT_NAME_WEIGHT
    if name in focus_names:
        weight *= FOCUS_NAME_WEIGHT
    if _is_specific(name):
        weight *= SPECIFIC_NAME_WEIGHT
    if name.startswith("_"):
        weight *= PRIVATE_NAME_WEIGHT
    if definers > COMMON_NAME_FILES:
        weight *= COMMON_NAME_WEIGHT
    return weight


def rank_definitions(
    definitions: list[Definition],
    references: Iterable[tuple[str, dict[str, int]]],
    focus_files: Iterable[str] = (),
    focus_names: Iterable[str] = (),
) -> list[RankedDefinition]:
    """Every definition with its score, best first."""
    # Imported here, not with the module: numpy starts OpenBLAS's threads, and a process that
    # only indexes should stay single-threaded so that it can fork its parsers (see `build`).
    import numpy as np

    focus_file_set = frozenset(focus_files)
    focus_name_set = frozenset(focus_names)
    definers: dict[str, set[str]] = defaultdict(set)
    for d in definitions:
        definers[d.name].add(d.path)
    refs_by_file = dict(references)
    files = sorted({d.path for d in definitions} | focus_file_set | set(refs_by_file))
    ids = {path: i for i, path in enumerate(files)}

    users: dict[str, int] = defaultdict(int)
    for counts in refs_by_file.values():
        for name in counts:
            if name in definers:
                users[name] += 1

    # Edges (user file, defining file, name, weight).
    src: list[int] = []
    dst: list[int] = []
    weight: list[float] = []
    names: list[str] = []
    for user, counts in refs_by_file.items():
        user_id = ids[user]
        boost = FOCUS_FILE_EDGE_WEIGHT if user in focus_file_set else 1.0
        for name, count in counts.items():
            where = definers.get(name)
            if not where or len(where) > IGNORED_NAME_FILES:
                continue
            w = boost * _name_weight(name, len(where), users[name], len(files), focus_name_set) * math.sqrt(count)
            for definer in where:
                if definer != user:
                    src.append(user_id)
                    dst.append(ids[definer])
                    weight.append(w)
                    names.append(name)

    file_rank = _pagerank(
        len(files),
        np.array(src, dtype=np.int64),
        np.array(dst, dtype=np.int64),
        np.array(weight, dtype=np.float64),
        [ids[f] for f in focus_file_set if f in ids],
    )

    # Each file hands its rank to the definitions it uses, in proportion to the edge weights.
    score: dict[tuple[str, str], float] = defaultdict(float)
    if src:
        out_weight = np.bincount(np.array(src, dtype=np.int64), weights=np.array(weight), minlength=len(files))
        for from_id, to_id, w, name in zip(src, dst, weight, names, strict=True):
            score[(files[to_id], name)] += file_rank[from_id] * w / out_weight[from_id]
    # Unused definitions still order by their file's rank, below every used one of that rank.
    ranked = [
        RankedDefinition(d, score.get((d.path, d.name), 0.0) + 1e-6 * file_rank[ids[d.path]]) for d in definitions
    ]
    ranked.sort(key=lambda r: (-r.score, r.definition.path, r.definition.start))
    return ranked


def _pagerank(n: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, focus: list[int]) -> np.ndarray:
    import numpy as np  # see rank_definitions

    if n == 0:
        return np.zeros(0)
    personal = np.ones(n)
    if focus:
        personal[focus] += FOCUS_RESTART_SHARE / (1 - FOCUS_RESTART_SHARE) * n / len(focus)
    personal /= personal.sum()
    out = np.bincount(src, weights=weight, minlength=n) if len(src) else np.zeros(n)
    share = weight / out[src] if len(src) else weight
    dangling = out == 0
    rank = personal.copy()
    for _ in range(ITERATIONS):
        flow = np.bincount(dst, weights=rank[src] * share, minlength=n) if len(src) else np.zeros(n)
        new: np.ndarray = DAMPING * (flow + rank[dangling].sum() * personal) + (1 - DAMPING) * personal
        if np.abs(new - rank).sum() < 1e-9:
            return new
        rank = new
    return rank


def render_map(
    ranked: list[RankedDefinition],
    max_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
    exclude_files: Iterable[str] = (),
) -> str:
    """The most important definitions that fit in `max_tokens`, grouped by file, one line each."""
    excluded = frozenset(exclude_files)
    candidates = [r for r in ranked if r.definition.path not in excluded]
    best = ""
    low, high = 0, len(candidates)
    while low <= high:  # the largest prefix of the ranking whose rendering fits
        middle = (low + high) // 2
        text = _render(candidates[:middle])
        if count_tokens(text) <= max_tokens:
            best, low = text, middle + 1
        else:
            high = middle - 1
    return best


def _render(chosen: list[RankedDefinition]) -> str:
    by_file: dict[str, list[Definition]] = defaultdict(list)
    order: list[str] = []
    for r in chosen:
        path = r.definition.path
        if path not in by_file:
            order.append(path)
        by_file[path].append(r.definition)
    lines = []
    for path in order:
        lines.append(f"{path}:")
        width = len(str(max(d.start[0] for d in by_file[path]) + 1))
        for d in sorted(by_file[path], key=lambda d: d.start):
            indent = "    " if d.parent else ""
            lines.append(f"{d.start[0] + 1:>{width}}│ {indent}{d.signature}")
    return "\n".join(lines) + ("\n" if lines else "")
