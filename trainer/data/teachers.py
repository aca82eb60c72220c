"""Teachers: who answers a task in a forced mode, writes the judge sentence, and critiques.

- `ModelTeacher`: any model katpilot serves (a local GGUF, a remote server), through the session
  with think forced on or off, so the data stage prompts exactly as serving does.
- `ProgrammaticTeacher`: the arithmetic ladder, computed. Its think-on answer writes every step and
  is always right. Its think-off answer is a direct answer by a solver that holds `span` operations
  in its head: right for problems of at most `span` steps, and for longer ones the number it reached
  after `span` steps (wrong). That makes its pass rates say what a careful human's would: short
  problems need no working, long ones do. No model is needed, so a tiny recipe gets think-on data a
  135M model could never write itself.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from dataclasses import dataclass, replace
from typing import Protocol

from katpilot import gate
from katpilot.config import Settings
from katpilot.engine.base import Engine, SamplingParams
from katpilot.errors import ContextOverflowError, KatpilotError
from katpilot.models import new_session, sampling_params, think_controls
from katpilot.terms import Mode
from trainer.data.tasks import Task

PROGRAMMATIC = "programmatic"
DEFAULT_SPAN = 2  # operations the programmatic teacher answers without writing them down
JUDGE_MAX_TOKENS = 48  # one sentence
CRITIC_MAX_TOKENS = 8  # "yes" or "no"


@dataclass(frozen=True)
class Attempt:
    """One answer to a task in one forced mode."""

    mode: Mode
    think: str
    answer: str
    tokens: int  # completion tokens (think + answer + tags): what "shortest" compares
    finish_reason: str = "stop"


class Teacher(Protocol):
    name: str
    seconds: float  # time spent answering (what bench/train_data.py compares against the wall time)

    def can_answer(self, task: Task) -> bool: ...

    def attempt(self, task: Task, mode: Mode, vote: int) -> Attempt: ...

    def judge_sentence(self, task: Task, mode: Mode) -> str: ...


class ModelTeacher:
    """A served model as teacher (and critic): every call goes through a new session."""

    def __init__(self, engine: Engine, settings: Settings, seed: int = 0) -> None:
        self.engine = engine
        self.settings = settings
        self.name = engine.info.name
        self.seed = seed
        self.sampling = sampling_params(settings)
        self.seconds = 0.0
        self._lock = threading.Lock()
        self.cancel = threading.Event()

    def can_answer(self, task: Task) -> bool:
        return True

    def _ask(self, prompt: str, mode: Mode, sampling: SamplingParams) -> tuple[gate.Parts, int, str]:
        started = time.perf_counter()
        try:
            session = new_session(self.engine, self.settings, sampling=sampling)
            response = session.ask(prompt, think_controls(self.settings, mode), self.cancel)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - started
        if response.stats.finish_reason == "cancelled":
            raise KeyboardInterrupt  # never keep a cut-off answer
        parts = gate.Parts(response.judge, response.mode, response.think, response.answer)
        return parts, response.stats.completion_tokens, response.stats.finish_reason

    def attempt(self, task: Task, mode: Mode, vote: int) -> Attempt:
        """The answer with thinking forced to `mode`; vote k samples with its own seed."""
        sampling = replace(self.sampling, seed=_vote_seed(self.seed, task.id, mode, vote))
        try:
            parts, tokens, finish = self._ask(task.item.prompt, mode, sampling)
        except ContextOverflowError:
            return Attempt(mode, "", "", 0, "context")
        return Attempt(mode, parts.think if mode == "on" else "", parts.answer, tokens, finish)

    def judge_sentence(self, task: Task, mode: Mode) -> str:
        """One sentence on why the task does (on) or does not (off) need reasoning; "" if unusable."""
        need = "needs" if mode == "on" else "does not need"
        prompt = (
            f"Question:\n{task.item.prompt}\n\n"
            f"In one sentence, say why this question {need} step-by-step reasoning before answering."
        )
        reply = self._short_reply(prompt, JUDGE_MAX_TOKENS)
        return first_sentence(reply) if reply is not None else ""

    def approves(self, task: Task, attempt: Attempt) -> bool:
        """The critic's verdict on a think-on attempt: does it say the answer is right?"""
        prompt = (
            f"Question:\n{task.item.prompt}\n\nProposed reasoning:\n{attempt.think}\n\n"
            f"Proposed answer:\n{attempt.answer}\n\nIs the proposed answer correct? Reply with yes or no."
        )
        reply = self._short_reply(prompt, CRITIC_MAX_TOKENS)
        return reply is not None and re.match(r"\W*yes\b", reply, re.IGNORECASE) is not None

    def _short_reply(self, prompt: str, max_tokens: int) -> str | None:
        """A greedy, short, think-off answer to a helper prompt (judge, critic); None if it does not fit."""
        sampling = replace(self.sampling, temperature=0.0, max_tokens=max_tokens)
        try:
            parts, _, _ = self._ask(prompt, "off", sampling)
        except ContextOverflowError:
            return None
        return parts.answer


class ProgrammaticTeacher:
    """The arithmetic ladder's answers and steps, computed (see the module docstring)."""

    name = PROGRAMMATIC

    def __init__(self, span: int = DEFAULT_SPAN) -> None:
        if span < 1:
            raise KatpilotError("the programmatic teacher's span must be at least 1", "give --span 1 or more")
        self.span = span
        self.seconds = 0.0

    def can_answer(self, task: Task) -> bool:
        return "work" in task.item.meta

    def attempt(self, task: Task, mode: Mode, vote: int) -> Attempt:
        start, steps = _work(task)
        if mode == "on":
            think = "\n".join(_worked_lines(task))
            answer = task.item.expected
        else:
            think = ""
            reached = steps[: self.span][-1] if steps else f"= {start}"
            answer = reached.rsplit("=", 1)[1].strip()
        return Attempt(mode, think, answer, _estimate_tokens(think) + _estimate_tokens(answer))

    def judge_sentence(self, task: Task, mode: Mode) -> str:
        _, steps = _work(task)
        n = len(steps)
        count = f"{n} step{'s' if n > 1 else ''}"
        # Short on purpose: auto mode pays for the judge on every request, a forced mode never does.
        return f"{count}: work it out." if mode == "on" else f"{count}: direct."


def template_judge(task: Task, mode: Mode) -> str:
    """The judge sentence when the teacher gave no usable one: what the task is, and why."""
    what = {
        "complete": "writing a function body from its signature",
        "fix": "finding a bug in a function",
        "docstring": "summarising a function in a docstring",
        "explain": "explaining what a function does",
        "question": "looking up a fact in the code shown",
        "arithmetic": "arithmetic",
        "code": "writing a small function",
    }.get(task.kind, "this request")
    if mode == "on":
        return f"This is {what}, and it takes several steps, so I will reason before answering."
    return f"This is {what}, and it is direct enough to answer without step-by-step reasoning."


def first_sentence(text: str) -> str:
    """The first sentence of a reply, without tags; "" when there is none worth keeping."""
    text = " ".join(text.split())
    if gate.has_tag(text):
        return ""
    match = re.match(r"(.+?[.!?])(?:\s|$)", text)
    if match is None:
        return ""  # cut off before its end (the token limit): a fragment teaches nothing
    sentence = match.group(1).strip()
    return sentence if 3 <= len(sentence.split()) <= 60 else ""


def _work(task: Task) -> tuple[str, list[str]]:
    """The ladder's computation: its start and its steps ("12 + 5 = 17", ...)."""
    parts = [p.strip() for p in task.item.meta["work"].split(";")]
    return parts[0].removeprefix("start ").strip(), parts[1:]


def _worked_lines(task: Task) -> list[str]:
    """The think-on working: the problem's own sentences, each event with its arithmetic
    ("A friend gives them 4 shells: 31 + 4 = 35."), as a careful person writes it out; bare
    arithmetic where the prompt's sentences do not line up with the steps."""
    start, steps = _work(task)
    sentences = re.split(r"(?<=\.) ", task.item.prompt.split("\n", 1)[0])
    if len(sentences) != len(steps) + 2:  # the opening count, one sentence per step, the question
        return [f"Start with {start}.", *(f"{step}." for step in steps)]
    events = sentences[1:-1]
    return [sentences[0], *(f"{event.removesuffix('.')}: {step}." for event, step in zip(events, steps, strict=True))]


def _estimate_tokens(text: str) -> int:
    """About how many tokens a computed text takes (no tokenizer at hand): words and symbols."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _vote_seed(seed: int, task_id: str, mode: Mode, vote: int) -> int:
    """A sampling seed per (task, mode, vote): stable across runs, different across votes."""
    return zlib.crc32(f"{seed}:{task_id}:{mode}:{vote}".encode()) & 0x7FFFFFFF
