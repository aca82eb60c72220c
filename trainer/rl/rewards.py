"""Step-SRPO's rewards for one group of rollouts (the G answers to one prompt).

- answer reward: 1 when the dataset's verifier (eval's `grade`, sandboxed for code) accepts the
  answer segment, else 0; plus `format_weight` (default 0.2, as HiPO) when the response is
  well-formed (`gate.well_formed`).
- judge reward: whether the rollout chose the right mode for this prompt, judged from the group's
  own evidence: the pass rate of its think-off rollouts against its think-on ones, with a margin that
  favours think-off (off is right when pass_off >= pass_on - margin, so thinking must pay for its
  tokens); plus `label_weight` when the mode agrees with the dataset's majority-vote label, where the
  data has one. A group whose rollouts all chose one mode decides only where the other mode's pass
  rate could not change the verdict (see `right_mode`); otherwise only the label speaks.
  A rollout that never decided with a tag gets no judge reward at all (it made no decision to reward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from katpilot.eval.items import EvalItem, grade
from katpilot.terms import Mode
from trainer.rl.segments import TokenSegments


@dataclass(frozen=True)
class RewardSettings:
    format_weight: float = 0.2
    judge_margin: float = 0.1  # think-off is right unless think-on passes this much more often
    label_weight: float = 0.5  # agreement with the dataset's label, where it has one


@dataclass(frozen=True)
class GroupRewards:
    """Per rollout of one group."""

    correct: list[float]  # 0 or 1: the verifier's verdict on the answer
    formatted: list[float]  # 0 or 1: well-formed
    answer: list[float]  # correct + format_weight * formatted
    judge: list[float]  # the judge reward
    right_mode: Mode | None  # what the group's evidence says (None: no evidence)


def group_rewards(
    item: EvalItem,
    rollouts: Sequence[TokenSegments],
    label: Mode | None,
    settings: RewardSettings,
) -> GroupRewards:
    correct = [1.0 if grade(item, r.parts.answer).passed else 0.0 for r in rollouts]
    formatted = [1.0 if r.well_formed else 0.0 for r in rollouts]
    answer = [c + settings.format_weight * f for c, f in zip(correct, formatted, strict=True)]
    decided = [(c, r.mode) for c, r in zip(correct, rollouts, strict=True) if r.mode_by_tag]  # the evidence
    right = right_mode(
        [c for c, mode in decided if mode == "off"], [c for c, mode in decided if mode == "on"], settings.judge_margin
    )
    judge = []
    for rollout in rollouts:
        if not rollout.mode_by_tag:
            judge.append(0.0)
            continue
        value = 1.0 if right is not None and rollout.mode == right else 0.0
        if label is not None and rollout.mode == label:
            value += settings.label_weight
        judge.append(value)
    return GroupRewards(correct, formatted, answer, judge, right)


def right_mode(off_passes: Sequence[float], on_passes: Sequence[float], margin: float) -> Mode | None:
    """The mode the group's evidence favours: think-off unless think-on passes more than `margin` more
    often. A group that tried one mode only decides where no pass rate of the other could change the
    verdict (off passing at least 1 - margin; on passing at most margin, so thinking did not pay
    whatever off would do); otherwise None: no evidence."""
    if off_passes and on_passes:
        pass_off = sum(off_passes) / len(off_passes)
        pass_on = sum(on_passes) / len(on_passes)
        return "off" if pass_off >= pass_on - margin else "on"
    if off_passes:
        return "off" if sum(off_passes) / len(off_passes) >= 1 - margin else None
    if on_passes:
        return "off" if sum(on_passes) / len(on_passes) <= margin else None
    return None
