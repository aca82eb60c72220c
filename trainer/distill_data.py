"""Distillation examples: the dataset's chats and the repository's own text, each with what the teacher reads.

A chat trains on its answer (serving's system prompt, answer-only labels: `chat_data`). Repository
text comes from the index's `documents()` (secrets withheld), cut at line ends into windows of about
`repo_chunk_tokens` student tokens; each window trains on every token (next-token and MTP). A share
`fim_rate` of the windows becomes fill-in-the-middle, in the student's own FIM tokens (the triple
`katpilot.gguf_file.FIM_TRIPLES` finds, the one the LSP's completions use; a student without any gets
StarCoder's, `model_io.ensure_fim_tokens`) and in the LSP's prefix-suffix-middle order, ending with
the end-of-text token so the model learns where a fill ends.

Alignment with the teacher (ULD pairs the k-th teacher position with the k-th student position):
- chat: the teacher reads the conversation in its own chat template (plain text when it has none)
  and reports its distributions over the answer's text; the student's aligned positions are those
  predicting its answer tokens;
- text: the teacher reads the prefix (a FIM window's prefix, or a plain window's first line) as
  plain text and reports its distributions over the middle (the rest of a plain window); the
  student's aligned positions are those predicting the middle's tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from trainer.chat_data import IGNORE, load_chats, tokenize_chat
from trainer.model_io import fim_tokens

CHARS_PER_TOKEN = 3  # a window is cut at line ends after about this many characters per token


@dataclass(frozen=True)
class TeacherText:
    """What the teacher reads: `messages` (a chat, rendered by its template) or `prefix` (plain text),
    then `continuation`, whose tokens' distributions are the signal."""

    continuation: str
    messages: tuple[tuple[str, str], ...] = ()
    prefix: str = ""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    aligned: list[bool]  # positions whose logits are paired with the teacher's, in order
    teacher: TeacherText
    kind: str  # "chat", "text" or "fim"


@dataclass(frozen=True)
class Examples:
    rows: list[Example]
    skipped: int  # longer than max_length
    fim_tokens: tuple[str, str, str] | None


def build_examples(tokenizer: Any, data: str, repo: str, cfg: Any) -> Examples:
    """The chats of `data` (if given) and the windows of `repo` (if given), tokenized for the student."""
    rows: list[Example] = []
    skipped = 0
    if data:
        for chat in load_chats(data):
            example = _chat_example(tokenizer, chat, cfg.system_prompt, cfg.max_length)
            skipped += example is None
            if example is not None:
                rows.append(example)
    fim = fim_tokens(tokenizer)
    if repo:
        windows = repo_windows(Path(repo), cfg.repo_chunk_tokens)
        rng = random.Random(cfg.seed)
        if cfg.repo_max_chunks and len(windows) > cfg.repo_max_chunks:
            windows = rng.sample(windows, cfg.repo_max_chunks)
        for text in windows:
            as_fim = fim is not None and rng.random() < cfg.fim_rate
            example = _text_example(tokenizer, text, fim if as_fim else None, rng, cfg.max_length)
            skipped += example is None
            if example is not None:
                rows.append(example)
    if not rows:
        raise KatpilotError(
            "no example fits max_length" if skipped else "nothing to train on",
            "raise --max-length" if skipped else "give --data, --repo or both",
        )
    return Examples(rows, skipped, fim)


def repo_windows(root: Path, chunk_tokens: int) -> list[str]:
    """The repository's indexed text (secrets withheld), cut at line ends into windows."""
    from katpilot.index import RepoIndex

    if not root.is_dir():
        raise KatpilotError(f"no repository at {root}", "give --repo a directory")
    budget = chunk_tokens * CHARS_PER_TOKEN
    windows: list[str] = []
    with RepoIndex(root) as index:
        for document in index.documents():
            current = ""
            for line in document.text.splitlines(keepends=True):
                if current and len(current) + len(line) > budget:
                    windows.append(current)
                    current = ""
                current += line[:budget]
            if current.strip():
                windows.append(current)
    return [w for w in windows if "\n" in w.rstrip("\n") and w.strip()]


def _chat_example(tokenizer: Any, chat: list[dict[str, str]], system: str, max_length: int) -> Example | None:
    row = tokenize_chat(tokenizer, chat, system, max_length)
    if row is None:
        return None
    labels = row["labels"]
    messages = [{"role": "system", "content": system}, *chat] if system and chat[0]["role"] != "system" else chat
    teacher = TeacherText(
        continuation=chat[-1]["content"], messages=tuple((m["role"], m["content"]) for m in messages[:-1])
    )
    return Example(row["input_ids"], labels, _predicting(labels), teacher, "chat")


def _text_example(
    tokenizer: Any, text: str, fim: tuple[str, str, str] | None, rng: random.Random, max_length: int
) -> Example | None:
    lines = text.splitlines(keepends=True)
    if fim is None:  # plain: the first line is the teacher's prompt, the rest its continuation
        prefix, middle, suffix = lines[0], "".join(lines[1:]), ""
    else:  # a seeded span of whole lines in the middle
        start = rng.randrange(1, len(lines))
        end = rng.randrange(start + 1, len(lines) + 1)
        prefix, middle, suffix = "".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:])

    def encode(text: str) -> list[int]:
        ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    middle_ids = encode(middle)
    if fim is None:
        head = encode(prefix)
        ids = head + middle_ids
    else:
        pre, suf, mid = fim
        head = encode(f"{pre}{prefix}{suf}{suffix}{mid}")
        ids = head + middle_ids + [tokenizer.eos_token_id]
    if len(ids) > max_length or not middle_ids:
        return None
    aligned = [False] * len(ids)
    for position in range(len(head) - 1, len(head) - 1 + len(middle_ids)):
        aligned[position] = True  # the logits here predict a middle token
    labels = list(ids)
    labels[0] = IGNORE  # nothing predicts the first token
    return Example(ids, labels, aligned, TeacherText(continuation=middle, prefix=prefix), "fim" if fim else "text")


def _predicting(labels: list[int]) -> list[bool]:
    """True at the positions whose logits predict a labelled token (the one after them)."""
    return [label != IGNORE for label in labels[1:]] + [False]
