"""Where tasks come from: the repository (mined through the index), bundled eval suites, a prompt file.

Kinds are interleaved (one of each in turn) before `--limit` cuts, so a short run still sees every
kind. The arithmetic ladder is drawn with seeds from `ARITHMETIC_SEED_OFFSET` on, so the data never
holds the items `katpilot eval --suite arithmetic` measures (seeds below it). The code suite has no
such split: training on it means `katpilot eval --suite code` is no longer held out.

`drill` adds ladder problems of few operations (one, by default) after the cut, from seeds of their
own: a small model answers even one-step problems directly only after thousands of examples
(docs/recipe.md measured it), far more than the ladder's share of a dataset holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from katpilot import gate
from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem, grade
from katpilot.eval.suites.files import jsonl_objects
from trainer.data.tasks import ALL_KINDS, REPO_KINDS, Task, encodable

ARITHMETIC_SEED_OFFSET = 10_000
ARITHMETIC_SIZE = 600  # a hundred problems per level
DRILL_SEED_OFFSET = 20_000  # the drill's problems: neither the data's ladder nor the eval's
PROMPT_VERIFIERS = ("exact", "numeric", "mentions", "similar")


def parse_kinds(text: str) -> tuple[str, ...]:
    """ "complete,fix" -> ("complete", "fix"); "repo" stands for every repository kind; "all" for all."""
    kinds: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        expanded = REPO_KINDS if part == "repo" else ALL_KINDS if part == "all" else (part,)
        for kind in expanded:
            if kind not in ALL_KINDS:
                raise KatpilotError(
                    f"--tasks {part!r} is not a task kind", f"use a comma-separated list of {', '.join(ALL_KINDS)}"
                )
            if kind not in kinds:
                kinds.append(kind)
    if not kinds:
        raise KatpilotError("--tasks names no task kind", f"use a comma-separated list of {', '.join(ALL_KINDS)}")
    return tuple(kinds)


def collect_tasks(
    repo: Path | None,
    kinds: Sequence[str],
    prompts: Path | None,
    seed: int = 0,
    limit: int | None = None,
    drill: int = 0,
    drill_levels: Sequence[int] = (1,),
) -> list[Task]:
    """Every task of the kinds asked for, interleaved by kind, the first `limit` of them, then `drill` more."""
    drilled = drill_tasks(drill, seed, drill_levels)  # first: a bad --drill fails before the repository is mined
    by_kind: dict[str, list[Task]] = {}
    repo_kinds = [k for k in kinds if k in REPO_KINDS]
    if repo_kinds:
        if repo is None:
            raise KatpilotError("repository task kinds need a repository", "give REPO, or --tasks arithmetic,code")
        from katpilot.index import RepoIndex
        from trainer.data.mining import mine_repository

        with RepoIndex(repo) as index:
            for task in mine_repository(index, repo_kinds, seed=seed, per_kind=limit):
                by_kind.setdefault(task.kind, []).append(task)
    if "arithmetic" in kinds:
        from katpilot.eval.suites.arithmetic import arithmetic_ladder

        ladder = arithmetic_ladder(ARITHMETIC_SEED_OFFSET + seed, ARITHMETIC_SIZE)
        by_kind["arithmetic"] = [_suite_task(item, "arithmetic", item.expected) for item in ladder]
    if "code" in kinds:
        by_kind["code"] = _code_tasks()
    if "prompt" in kinds or prompts is not None:
        if prompts is None:
            raise KatpilotError("--tasks prompt needs a prompt file", "give --prompts FILE.jsonl")
        by_kind["prompt"] = load_prompts(prompts)
    lists = [by_kind.get(kind, []) for kind in [*kinds, *(["prompt"] if "prompt" not in kinds else [])]]
    interleaved = [task for row in _zip_longest(lists) for task in row]
    return (interleaved[:limit] if limit else interleaved) + drilled


def drill_tasks(count: int, seed: int = 0, levels: Sequence[int] = (1,)) -> list[Task]:
    """`count` ladder problems of the given operation counts, taken in turn, ids drill-0000, ...

    Item i is the same for any count (and the same levels)."""
    from katpilot.eval.suites.arithmetic import LEVELS, arithmetic_ladder

    if count < 0:
        raise KatpilotError("--drill must be 0 or more", "give how many problems to add")
    if not levels or any(not 1 <= level <= LEVELS for level in levels) or len(set(levels)) != len(levels):
        raise KatpilotError(
            f"the drill's levels {list(levels)} are not distinct operation counts from 1 to {LEVELS}",
            'give levels such as "1,2"',
        )
    if count == 0:
        return []
    rounds = -(-count // len(levels))
    ladder = arithmetic_ladder(DRILL_SEED_OFFSET + seed, LEVELS * rounds)  # item i has 1 + i % LEVELS steps
    picked = [ladder[LEVELS * (i // len(levels)) + levels[i % len(levels)] - 1] for i in range(count)]
    return [
        _suite_task(replace(item, id=f"drill-{i:04d}"), "arithmetic", item.expected) for i, item in enumerate(picked)
    ]


def parse_levels(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """ "1,2" or [1, 2] (a recipe's TOML array) -> (1, 2): the drill's operation counts."""
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise KatpilotError(f"drill levels {list(value)!r} are not whole numbers", "give levels such as [1, 2]")
    try:
        return tuple(int(part) for part in str(value).split(",") if part.strip())
    except ValueError:
        raise KatpilotError(f"drill levels {value!r} are not numbers", 'give levels such as "1,2"') from None


def load_prompts(path: Path) -> list[Task]:
    """A user's prompts: one JSON object per line, `prompt` required.

    Optional: `answer` (the ground truth; without it the critic alone judges answers), `verifier`
    (exact, numeric, mentions or similar; default exact), `id`.
    """
    tasks: list[Task] = []
    for number, row in jsonl_objects(path, "prompt file"):
        where = f"{path} line {number}"
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise KatpilotError(f"{where} has no 'prompt' string", 'write {"prompt": "...", "answer": "..."}')
        answer = row.get("answer", "")
        verifier = row.get("verifier", "exact")
        if not isinstance(answer, str) or verifier not in PROMPT_VERIFIERS:
            raise KatpilotError(
                f"{where}: 'answer' must be a string and 'verifier' one of {', '.join(PROMPT_VERIFIERS)}",
                "fix that line",
            )
        answer = answer.strip()
        if not encodable(row["prompt"] + answer) or gate.has_tag(answer):
            raise KatpilotError(
                f"{where}: the prompt or answer holds AutoThink tags or broken characters", "fix that line"
            )
        task_id = f"prompt:{row.get('id', number)}"
        item = EvalItem(
            id=task_id,
            prompt=row["prompt"],
            verifier=verifier,
            expected=answer,
            accepted=(answer,) if verifier == "mentions" else (),
        )
        if answer and not grade(item, answer).passed:
            raise KatpilotError(
                f"{where}: its own answer {answer[:40]!r} fails the {verifier} verifier",
                "fix the answer or the verifier",
            )
        tasks.append(Task(item, "prompt", reference=answer, ground_truth=bool(answer)))
    if len({t.id for t in tasks}) != len(tasks):
        raise KatpilotError(f"{path} gives two prompts the same 'id'", "make every id unique")
    return tasks


def _suite_task(item: EvalItem, kind: str, reference: str) -> Task:
    return Task(item, kind, reference=reference)


def _code_tasks() -> list[Task]:
    """The bundled code suite, with the reference solutions its data file keeps."""
    from katpilot.eval.suites.code import TASKS_FILE, code_tasks

    solutions = {}
    for line in TASKS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            solutions[row["id"]] = f"```python\n{row['solution']}```"
    return [_suite_task(item, "code", solutions.get(item.id, "")) for item in code_tasks()]


def _zip_longest(lists: list[list[Task]]) -> list[list[Task]]:
    """Rows of one task per kind: [a1, b1, c1], [a2, b2], ..."""
    longest = max((len(x) for x in lists), default=0)
    return [[x[i] for x in lists if i < len(x)] for i in range(longest)]
