"""Chat records for supervised training: read, checked, tokenized with loss on the answer only.

A record is any JSON object with `messages` (the data stage's records, or any JSONL of chats). The
last message must be the assistant's; it is the only one the loss sees (labels -100 elsewhere). The
system prompt serving sends is put first when a record has none, so the model is trained on the
prompt it will be served with.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from katpilot import gate
from katpilot.errors import KatpilotError
from katpilot.eval.suites.files import jsonl_objects

IGNORE = -100
ROLES = ("system", "user", "assistant")


def data_file(spec: str | Path) -> Path:
    """The JSONL file of a dataset directory (records.jsonl) or the file itself."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.is_file():
        raise KatpilotError(f"no training data at {spec}", "give a `katpilot train data` directory or a JSONL file")
    return path


def load_chats(spec: str | Path) -> list[list[dict[str, str]]]:
    """Every record's messages, checked; a bad record is one error naming its line and field."""
    path = data_file(spec)
    chats = []
    for number, row in jsonl_objects(path, "data file"):
        where = f"{path} line {number}"
        messages = checked_messages(row, where)
        if messages[-1]["role"] != "assistant":
            raise KatpilotError(f"{where}: the last message must be the assistant's", "end each record with the answer")
        chats.append(messages)
    if not chats:
        raise KatpilotError(f"{path} holds no records", "build a dataset with `katpilot train data`")
    return chats


def tokenize_chat(
    tokenizer: Any, messages: list[dict[str, str]], system_prompt: str, max_length: int
) -> dict[str, list[int]] | None:
    """input_ids, attention_mask and labels (answer tokens only); None when longer than max_length."""
    messages = with_system_prompt(messages, system_prompt)
    prompt = prompt_text(tokenizer, messages[:-1], "")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise KatpilotError(
            "the chat template renders the answer's turn differently from its generation prompt",
            "use a model whose template opens the assistant turn the same way in both",
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    ids = prompt_ids + answer_ids
    if len(ids) > max_length:
        return None
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE] * len(prompt_ids) + answer_ids,
    }


def checked_messages(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    """A record's `messages` as {role, content} dicts; a bad one is one error naming `where` and the field."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise KatpilotError(f"{where}: field 'messages' is missing or empty", "give a list of {role, content}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise KatpilotError(f"{where}: messages[{i}].role must be one of {', '.join(ROLES)}", "fix the record")
        if not isinstance(message.get("content"), str):
            raise KatpilotError(f"{where}: messages[{i}].content must be a string", "fix the record")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def with_system_prompt(messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """The messages with serving's system prompt first when they bring none (what the model will see)."""
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def prompt_text(tokenizer: Any, messages: list[dict[str, str]], system_prompt: str) -> str:
    """The rendered conversation up to the assistant's turn, as serving renders it for generation."""
    rendered: str = tokenizer.apply_chat_template(
        with_system_prompt(messages, system_prompt), tokenize=False, add_generation_prompt=True
    )
    return rendered


def forced_variants(chats: list[list[dict[str, str]]], share: float, seed: int) -> list[list[dict[str, str]]]:
    """Copies of a seeded `share` of the AutoThink chats whose answer starts at its mode tag, judge left out.

    Why: serving forces a mode (`--think on|off`) by prefilling the assistant turn with the mode tag
    (the `kat` profile), so a forced response never has a judge. A model trained only on responses
    that open with `<judge>` has never seen that start: measured on the tiny recipe, forced think-on
    stopped after two or three tokens on most problems. These copies teach the continuation."""
    rng = random.Random(f"katpilot-forced:{seed}")
    variants = []
    for chat in chats:
        answer = chat[-1]["content"]
        starts = [answer.find(tag) for tag in (gate.THINK_ON, gate.THINK_OFF) if tag in answer]
        if not answer.lstrip().startswith(gate.JUDGE_OPEN) or not starts or rng.random() >= share:
            continue
        variants.append([*chat[:-1], {"role": "assistant", "content": answer[min(starts) :]}])
    return variants
