"""Engines and suite files for the eval tests: answers chosen by question, a KAT model that branches.

`ReplyEngine` answers each question with the pieces scripted for it (one piece, one token), so a
test knows every answer's verdict and token count in advance. `BranchingKat` writes an AutoThink
judge, then whatever the mode the session chose calls for: the sweep's decision, made visible.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from pathlib import Path

from scripted import ScriptedEngine

from katpilot.engine.base import SamplingParams, StreamStats


class ReplyEngine(ScriptedEngine):
    """Answers a prompt with the pieces of the first scripted question it contains."""

    def __init__(self, replies: dict[str, list[str]], logprobs: tuple[float, float] | None = (-1.0, -2.0)) -> None:
        super().__init__([], logprobs)
        self.replies = replies
        self.streams = 0

    def pieces_for(self, prompt: str) -> list[str]:
        question = next(q for q in self.replies if q in prompt)
        return list(self.replies[question])

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        stats = stats if stats is not None else StreamStats()
        self.prompts.append(prompt)
        self.streams += 1
        pieces = self.pieces_for(prompt)
        for piece in pieces[: params.max_tokens]:
            if cancel is not None and cancel.is_set():
                stats.finish_reason = "cancelled"
                return
            stats.generated_tokens += 1
            yield piece
        stats.finish_reason = "stop" if len(pieces) <= params.max_tokens else "length"


JUDGE = ["This ", "takes ", "steps.", "\n</judge>", "\n<think"]
THINKING = ["40 ", "plus ", "2.", "\n</think>", "\n<answer>\n", "42", "\n</answer>"]
DIRECT = ["41", "\n</answer>"]


class BranchingKat(ReplyEngine):
    """A KAT model: a judge after `<judge>`, a right answer after thinking, a wrong one without."""

    def __init__(self, logprobs: tuple[float, float] | None = (-1.0, -2.0)) -> None:
        super().__init__({}, logprobs)

    def pieces_for(self, prompt: str) -> list[str]:
        if prompt.endswith("<judge>\n"):
            return JUDGE
        if prompt.endswith("<think>\n"):
            return THINKING
        if prompt.endswith("<answer>\n"):
            return DIRECT
        raise AssertionError(f"unexpected prompt end: {prompt[-40:]!r}")


def gsm8k_file(path: Path, questions: dict[str, str]) -> Path:
    """A GSM8K-shaped JSONL file: question -> answer ("#### N")."""
    lines = [json.dumps({"question": q, "answer": f"so #### {a}"}) for q, a in questions.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
