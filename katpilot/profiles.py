"""Model families: how each one writes its thinking, and how we steer it.

A profile says which tags the gate recognises, what to prefill in the assistant turn to force
thinking on or off in the model's own format, which continuations to score at the decision point
for p(on), and how to close a think block when the budget runs out. Pure data, no I/O.

- `kat`:   <judge> ... </judge> <think_on|think_off> [<think> ... </think>] <answer> ... </answer>
- `think`: <think> ... </think> answer            (Qwen3, DeepSeek-R1 distills)
- `plain`: answer only; think=on prefills a think block and asks for reasoning in the system prompt
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from katpilot import gate
from katpilot.errors import ConfigError
from katpilot.terms import PROFILE_CHOICES, ThinkMode

DecisionKind = Literal["kat", "think", "none"]

# A judge that never closes is cut here so the decision point is always reached.
JUDGE_MAX_TOKENS = 128


@dataclass(frozen=True)
class Profile:
    """How one model family formats thinking; see the module docstring."""

    name: str
    description: str
    tags: frozenset[str]  # recognised by the gate for think=auto/off
    on_tags: frozenset[str]  # recognised by the gate for think=on
    prefill_auto: str  # start of the assistant turn in auto mode
    prefill_on: str  # forces thinking (fed to the gate as the user's decision)
    prefill_off: str  # forces a direct answer
    decision: DecisionKind  # what p(on) is computed over
    on_continuation: str  # kat: the think_on tag
    off_continuations: tuple[str, ...]  # kat: the think_off tag; think: ways to close at once
    close_think: str  # appended when the think budget is spent
    close_judge: str  # appended when the judge runs past JUDGE_MAX_TOKENS
    stop_after_answer: bool  # stop generating once </answer> is seen
    think_instruction: str  # added to the system prompt for think=on ("" for none)

    def gate_tags(self, think: ThinkMode) -> frozenset[str]:
        """Tags the gate should recognise for this request."""
        return self.on_tags if think == "on" else self.tags

    def prefill(self, think: ThinkMode) -> str:
        """Text that starts the assistant turn for this think mode."""
        return {"auto": self.prefill_auto, "on": self.prefill_on, "off": self.prefill_off}[think]


KAT = Profile(
    name="kat",
    description="AutoThink: <judge>, then <think_on>/<think_off>, <think>, <answer> (KAT-V1)",
    tags=gate.KAT_TAGS,
    on_tags=gate.KAT_TAGS,
    prefill_auto="<judge>\n",
    prefill_on="<think_on>\n<think>\n",
    prefill_off="<think_off>\n<answer>\n",
    decision="kat",
    on_continuation=gate.THINK_ON,
    off_continuations=(gate.THINK_OFF,),
    close_think="\n</think>\n<answer>\n",
    close_judge="\n</judge>\n",
    stop_after_answer=True,
    think_instruction="",
)

THINK = Profile(
    name="think",
    description="reasoning models that open with <think>...</think> (Qwen3, DeepSeek-R1 distills)",
    tags=gate.THINK_TAGS,
    on_tags=gate.THINK_TAGS,
    prefill_auto="<think>\n",
    prefill_on="<think>\n",
    prefill_off="<think>\n\n</think>\n\n",
    decision="think",
    on_continuation="",
    off_continuations=("</think>", "\n</think>"),
    close_think="\n</think>\n\n",
    close_judge="",
    stop_after_answer=False,
    think_instruction="",
)

PLAIN = Profile(
    name="plain",
    description="ordinary chat models: everything is answer; think=on prefills a think block",
    tags=gate.NO_TAGS,
    on_tags=gate.THINK_TAGS,
    prefill_auto="",
    prefill_on="<think>\n",
    prefill_off="",
    decision="none",
    on_continuation="",
    off_continuations=(),
    close_think="\n</think>\n\n",
    close_judge="",
    stop_after_answer=False,
    think_instruction=(
        "First reason step by step inside <think> and </think>, then write the final answer after </think>."
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (KAT, THINK, PLAIN)}  # with "auto": terms.PROFILE_CHOICES


def detect_profile(chat_template: str | None, tags_in_vocab: frozenset[str]) -> Profile:
    """Pick the family from the GGUF: AutoThink tags in the vocabulary or the chat template."""
    template = chat_template or ""
    if {gate.THINK_ON, gate.THINK_OFF} & tags_in_vocab or gate.THINK_ON in template:
        return KAT
    if gate.THINK_OPEN in tags_in_vocab or gate.THINK_OPEN in template:
        return THINK
    return PLAIN


def get_profile(name: str, chat_template: str | None, tags_in_vocab: frozenset[str]) -> Profile:
    """The profile named (or detected, for "auto")."""
    if name == "auto":
        return detect_profile(chat_template, tags_in_vocab)
    if name not in PROFILES:
        choices = ", ".join(PROFILE_CHOICES)
        raise ConfigError(f"unknown profile '{name}'", f"use one of: {choices}")
    return PROFILES[name]
