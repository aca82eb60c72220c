"""A data task: an eval item (prompt + how to check an answer) plus where it came from.

Every source (repository mining, a bundled eval suite, a user's prompt file) yields `Task`s; the
builder never needs to know which. Answers are graded with eval's `grade(task.item, answer)`, so
the data stage and `katpilot eval` judge alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from katpilot.eval.items import EvalItem

# Task kinds mined from a repository, in the order `--tasks` lists them.
REPO_KINDS = ("complete", "fix", "docstring", "explain", "question")
# Task kinds from elsewhere: bundled eval suites and the user's prompt file.
OTHER_KINDS = ("arithmetic", "code", "prompt")
ALL_KINDS = REPO_KINDS + OTHER_KINDS


@dataclass(frozen=True)
class Task:
    """One question for the teacher, with the ground truth the mining kept."""

    item: EvalItem  # id (unique across the dataset), prompt, verifier and expected answer
    kind: str  # one of ALL_KINDS
    source_file: str | None = None  # repository-relative path the task was mined from
    symbol: str | None = None  # qualified name of the definition it is about
    reference: str = ""  # a ground-truth answer `grade(item, reference)` accepts ("" when none is known)
    ground_truth: bool = True  # False: nothing to grade against (a user's prompt alone); the critic decides

    @property
    def id(self) -> str:
        return self.item.id


def encodable(text: str) -> bool:
    """Whether the text can be written as UTF-8 (a server may send lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
