"""Inline completion without I/O: the prompt around the cursor, and where a completion must stop.

Two prompt shapes, picked by the model:
- fill-in-the-middle, when the model has FIM tokens (`ModelInfo.fim_tokens`): prefix, suffix,
  middle, sent raw to the engine;
- a chat prompt otherwise: the code with a `<CURSOR>` mark, answered think-off through the session.

Either way the text is cut by `cut_completion` at the first sensible boundary: a blank line, a line
that leaves the cursor's block, a bracket that closes one the prefix opened, the end of the line
when the cursor sits inside a line, a code fence, or anything that looks like a gate tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from katpilot.gate import KAT_TAGS

CURSOR = "<CURSOR>"
COMPLETION_SYSTEM = (
    "You are a code completion engine. You reply with only the code that belongs at <CURSOR>: "
    "no explanation, no repetition of the code around it."
)
# Tags of every AutoThink family, also unfinished ("<think" at the end), and the chat end markers;
# a completion is cut before any of them.
_TAG_NAMES = sorted({tag.strip("</>") for tag in KAT_TAGS}, key=lambda name: (-len(name), name))
_TAG = re.compile(rf"</?(?:{'|'.join(map(re.escape, _TAG_NAMES))})\b|<\|im_end\|>|<\|endoftext\|>")
_FENCE_OPEN = re.compile(r"\A\s*```[\w+#.-]*[ \t]*\n")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}


@dataclass(frozen=True)
class CursorContext:
    """The document split at the cursor, trimmed to what the prompt can hold."""

    prefix: str
    suffix: str
    language: str  # a fence/markdown language name, "" if unknown
    path: str  # shown to the model; relative to the workspace when possible
    repo_context: list[str]  # lines describing definitions used near the cursor

    @property
    def line_before(self) -> str:
        """The text of the cursor's line before the cursor."""
        return self.prefix.rsplit("\n", 1)[-1]

    @property
    def line_after(self) -> str:
        """The text of the cursor's line after the cursor."""
        return self.suffix.split("\n", 1)[0]


def split_around(text: str, offset: int, max_chars: int) -> tuple[str, str]:
    """Prefix and suffix of `text` at `offset`, keeping at most `max_chars` (3/4 before the cursor).

    The prefix keeps whole lines from the cursor backwards and the suffix whole lines forwards,
    so the model never sees half a line at the edge.
    """
    before, after = text[:offset], text[offset:]
    budget_before = max(1, max_chars * 3 // 4)
    budget_after = max(0, max_chars - min(len(before), budget_before))
    if len(before) > budget_before:
        before = before[-budget_before:]
        newline = before.find("\n")
        if 0 <= newline < len(before) - 1:
            before = before[newline + 1 :]
    if len(after) > budget_after:
        after = after[:budget_after]
        newline = after.rfind("\n")
        if newline > 0:
            after = after[:newline]
    return before, after


def fim_prompt(ctx: CursorContext, tokens: tuple[str, str, str], comment: str) -> str:
    """Prefix-suffix-middle order; repository context rides in as comments above the prefix."""
    pre, suf, mid = tokens
    head = "".join(f"{comment} {line}\n" for line in ctx.repo_context)
    return f"{pre}{head}{ctx.prefix}{suf}{ctx.suffix}{mid}"


def chat_question(ctx: CursorContext) -> str:
    """The user message of the chat-prompt completion."""
    parts = [
        f"Complete the code at {CURSOR} in {ctx.path}. Reply with only the code to insert at {CURSOR}.",
    ]
    if ctx.repo_context:
        parts.append("Definitions used nearby:\n" + "\n".join(ctx.repo_context))
    parts.append(f"```{ctx.language}\n{ctx.prefix}{CURSOR}{ctx.suffix}\n```")
    return "\n\n".join(parts)


def clean_chat_answer(answer: str, ctx: CursorContext) -> str:
    """A chat answer as insertable text: no opening fence, no echo of the line before the cursor."""
    if answer.lstrip().startswith("`") and "\n" not in answer.lstrip():
        return ""  # an opening fence still arriving: nothing to insert yet
    text = _FENCE_OPEN.sub("", answer, count=1)
    if CURSOR in text:  # the model echoed the marked code: keep what follows the mark
        text = text.split(CURSOR, 1)[1]
    line = ctx.line_before
    stripped = line.strip()
    if stripped:
        body = text.lstrip()
        if body.startswith(stripped):
            text = body[len(stripped) :]
    elif line and text.startswith(line):
        text = text[len(line) :]  # the model re-indented the blank line the cursor is on
    return text


def cut_completion(text: str, ctx: CursorContext) -> tuple[str, bool]:
    """The part of `text` to insert, and whether a boundary was reached (stop generating)."""
    cut = len(text)
    tag = _TAG.search(text)
    if tag:
        cut = tag.start()
    fence = text.find("```")
    if fence >= 0:
        cut = min(cut, fence)
    if ctx.line_after.strip():  # inside a line: complete this line only
        newline = text.find("\n")
        if newline >= 0:
            cut = min(cut, newline)
    cut = min(cut, _blank_line(text), _block_end(text, ctx), _bracket_end(text, ctx))
    done = cut < len(text)
    return text[:cut].rstrip() if done else text, done


def _blank_line(text: str) -> int:
    """Where the first blank line starts (the newline that ends the last code line), else len."""
    start = 1 if text.startswith("\n") else 0  # the cursor sat at the end of a line
    match = _BLANK_LINE.search(text, start)
    return match.start() if match else len(text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _block_end(text: str, ctx: CursorContext) -> int:
    """Where a new line starts that is indented less than the cursor's block, else len."""
    line = ctx.line_before
    base = _indent(line) if line.strip() else len(line)
    if line.rstrip().endswith((":", "{", "(", "[")):
        base += 1  # the block opened on this line is deeper than the line itself
    offset = 0
    for index, current in enumerate(text.split("\n")):
        # A line's indentation is known once it has a visible character.
        if index > 0 and current.strip() and _indent(current) < base and not _closes_only(current):
            return offset - 1  # the newline before this line
        offset += len(current) + 1
    return len(text)


def _closes_only(line: str) -> bool:
    """`}` or `)` alone on a line: the end of a block the completion itself opened."""
    return bool(line.strip()) and all(ch in ")]};, " for ch in line.strip())


def _bracket_end(text: str, ctx: CursorContext) -> int:
    """Cut where the completion closes a bracket the prefix opened.

    When the rest of the line already holds that closer (the editor paired it), the cut falls
    before it; otherwise the closer is kept and the cut falls at the end of its line.
    """
    depth = 0
    quote = ""
    for index, ch in enumerate(text):
        if quote:
            if ch == quote and text[index - 1] != "\\":
                quote = ""
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
            if depth < 0:
                if ctx.line_after.lstrip().startswith(ch):
                    return index
                newline = text.find("\n", index)
                return newline if newline >= 0 else len(text)
        elif ch == "\n":
            quote = ""
    return len(text)
