"""Suites by name: the bundled ones (arithmetic, code, repo) or a JSONL file of a standard shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem

BUNDLED = ("arithmetic", "code", "repo")


@dataclass(frozen=True)
class Suite:
    """A named list of items; `name` is what the report and the run's fingerprint call it."""

    name: str
    description: str
    items: list[EvalItem]


def load_suite(spec: str, *, seed: int = 0, repo: Path | None = None) -> Suite:
    """The suite `spec` names: a bundled suite, or the path of a HumanEval/MBPP/GSM8K JSONL file."""
    if spec == "arithmetic":
        from katpilot.eval.suites.arithmetic import LEVELS, arithmetic_ladder

        return Suite(spec, f"arithmetic ladder (1 to {LEVELS} steps, seed {seed})", arithmetic_ladder(seed))
    if spec == "code":
        from katpilot.eval.suites.code import code_tasks

        return Suite(spec, "bundled Python tasks (levels 1 to 5, unit tests in the sandbox)", code_tasks())
    if spec == "repo":
        from katpilot.eval.suites.repo import repo_questions

        root = (repo or Path(".")).expanduser().resolve()
        return Suite(
            f"repo:{root.name}", f"questions about the repository {root} (seed {seed})", repo_questions(root, seed)
        )
    path = Path(spec).expanduser()
    if path.suffix in (".jsonl", ".json") or path.exists():
        from katpilot.eval.suites.files import load_jsonl_suite

        shape, items = load_jsonl_suite(path)
        return Suite(f"{shape}:{path.name}", f"{shape} file {path.resolve()}", items)
    raise KatpilotError(
        f"unknown suite {spec!r}", f"use {', '.join(BUNDLED)}, or the path of a HumanEval, MBPP or GSM8K .jsonl file"
    )
