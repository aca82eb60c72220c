"""RL's prompts: each with the verifier that grades its rollouts and, where the data has one, the
majority-vote mode label.

Two sources: a `katpilot train data` dataset (its records carry the eval item they were graded
with; records whose ground truth only a critic judged have none and are left out, counted), or any
eval suite `katpilot eval` takes (`arithmetic`, `code`, a HumanEval/MBPP/GSM8K JSONL file): no
labels, the group's evidence alone teaches the judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem, item_from_json
from katpilot.eval.suites import BUNDLED, load_suite
from katpilot.eval.suites.files import jsonl_objects
from katpilot.terms import Mode
from trainer.chat_data import checked_messages, data_file


@dataclass(frozen=True)
class RLPrompt:
    messages: list[dict[str, str]]  # the conversation up to the assistant's turn
    item: EvalItem  # how a rollout's answer is graded
    label: Mode | None  # the dataset's mode for this prompt (None: no label)
    kind: str  # task kind (or the suite's name), for the think-on rate per kind
    level: int  # difficulty, 0 when the source grades none


@dataclass(frozen=True)
class LoadedPrompts:
    prompts: list[RLPrompt]
    skipped: int  # records without a verifiable item


def load_prompts(spec: str, seed: int = 0) -> LoadedPrompts:
    """The prompts of a dataset directory or JSONL file, or of an eval suite."""
    path = Path(spec).expanduser()
    if spec in BUNDLED or (path.is_file() and not _is_dataset_file(path)):
        suite = load_suite(spec, seed=seed)
        prompts = [
            RLPrompt([{"role": "user", "content": item.prompt}], item, None, suite.name.split(":")[0], item.level or 0)
            for item in suite.items
        ]
        return LoadedPrompts(prompts, 0)
    return _from_dataset(data_file(spec))


def _is_dataset_file(path: Path) -> bool:
    """A dataset's JSONL has `messages`; a suite file has prompts in its own shape."""
    rows = jsonl_objects(path, "data file")
    return bool(rows) and "messages" in rows[0][1]


def _from_dataset(path: Path) -> LoadedPrompts:
    prompts, skipped = [], 0
    for number, row in jsonl_objects(path, "data file"):
        where = f"{path} line {number}"
        if row.get("item") is None:
            skipped += 1  # graded by a critic: nothing to verify a rollout against
            continue
        try:
            item = item_from_json(row["item"])
        except ValueError as exc:
            raise KatpilotError(f"{where}: {exc}", "rebuild the dataset with `katpilot train data`") from None
        turns = checked_messages(row, where)
        if turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        if not turns:
            raise KatpilotError(f"{where}: no user message before the answer", "fix the record")
        label = row.get("mode")
        level = row.get("level") or 0
        if isinstance(level, bool) or not isinstance(level, int):
            raise KatpilotError(f"{where}: level must be a whole number, not {level!r}", "fix the record")
        prompts.append(
            RLPrompt(
                turns,
                item,
                label if label in ("on", "off") else None,
                str(row.get("kind") or "data"),
                level,
            )
        )
    if not prompts:
        raise KatpilotError(
            f"{path} holds no record with a verifiable item",
            "build the dataset with a katpilot new enough to store items (`katpilot train data`), or give an eval suite",
        )
    return LoadedPrompts(prompts, skipped)
