"""Running a suite: every item under every condition, through the one session, into the journal.

A condition is a forced mode (`on`, `off`) or `auto` at one threshold. The threshold sweep does not
cost a run per threshold. For one item, the threshold only matters through the decision it leads
to: mode = on when p(on) >= threshold. So:
1. the first auto threshold generates a response and records its p(on) and mode;
2. every other threshold whose decision under that p(on) is the same mode reuses that response
   (`reused_from`), since the session would have produced exactly it;
3. a threshold that flips the decision generates once more; the engine's scoring is memoised
   (`ScoreMemo`, per item within one run), so when the judge comes out the same (greedy decoding)
   p(on) is read from the memo, not scored again. At most two generations per item, and one
   scoring, whatever the sweep's size (a resumed run scores an unfinished item again).
A response that never reached a decision point (a plain model, or one that ended inside its judge)
or where the engine gave no p(on) (a server without logprobs) is the same at every threshold.
On a profile with no decision point whose auto prompt is its off prompt (a plain model), auto is
off with nobody deciding: the off response is reused for every threshold (`reused_from` "off").
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from katpilot.config import Settings
from katpilot.engine.base import Engine, SamplingParams, StreamStats
from katpilot.errors import ContextOverflowError, KatpilotError
from katpilot.eval.items import EvalItem, grade
from katpilot.eval.records import Record, RunJournal
from katpilot.models import new_session
from katpilot.profiles import Profile
from katpilot.session import Response, ThinkControls
from katpilot.terms import ThinkMode


@dataclass(frozen=True)
class Condition:
    """A forced mode, or auto at one threshold."""

    think: ThinkMode
    threshold: float | None = None

    @property
    def label(self) -> str:
        return f"auto@{self.threshold:g}" if self.think == "auto" else self.think


def conditions_for(modes: Sequence[ThinkMode], thresholds: Sequence[float]) -> list[Condition]:
    """on and off as asked, and auto once per threshold (in the order given)."""
    out: list[Condition] = []
    for mode in modes:
        if mode == "auto":
            out += [Condition("auto", t) for t in thresholds]
        else:
            out.append(Condition(mode))
    return out


def decision_at(p_on: float, threshold: float) -> str:
    """The session's rule (session._kat_decision): think when p(on) >= threshold."""
    return "on" if p_on >= threshold else "off"


def reusable(record: Record, threshold: float) -> bool:
    """Would the session have produced this auto response at `threshold` too?"""
    if record.decided_by != "model" or record.p_on is None:
        return True  # no decision point was reached, or the model wrote its own tag: no threshold applies
    return decision_at(record.p_on, threshold) == record.mode


class ScoreMemo(Engine):
    """An engine that remembers its decision scores, so a repeated judge is not scored twice.

    Everything else passes through. `forget()` between items keeps the memo to one item's prompts.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.info = engine.info
        self._memo: dict[tuple[str, tuple[str, ...]], list[float] | None] = {}
        self.scored = 0  # continuation_logprobs calls that reached the engine
        self.reused = 0  # calls answered from the memo

    def forget(self) -> None:
        self._memo.clear()

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        return self.engine.stream(prompt, params, cancel, stats)

    def continuation_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float] | None:
        key = (prompt, tuple(continuations))
        if key in self._memo:
            self.reused += 1
            return self._memo[key]
        self.scored += 1
        scores = self.engine.continuation_logprobs(prompt, continuations)
        self._memo[key] = scores
        return scores

    def close(self) -> None:
        self.engine.close()


class Interrupted(KatpilotError):
    """The run was stopped (Ctrl-C); what finished is in the journal."""

    exit_code = 130  # as for any interrupted command


@dataclass
class RunCounts:
    """What this invocation did (a resumed run counts only its own work)."""

    generated: int = 0  # responses generated
    reused: int = 0  # auto records that share another threshold's response
    skipped: int = 0  # records already in the journal
    scored: int = 0  # decision scorings by the engine
    score_reuses: int = 0  # decision scorings answered from the memo


class EvalRunner:
    """Runs items under conditions, one worker per engine (several only for remote engines)."""

    def __init__(
        self,
        engines: Sequence[Engine],
        settings: Settings,
        controls: ThinkControls,
        sampling: SamplingParams,
        journal: RunJournal,
        conditions: Sequence[Condition],
        profile: Profile | None = None,
    ) -> None:
        self.engines = [ScoreMemo(e) for e in engines]
        # auto asks exactly what off asks and nothing decides in between: one generation serves both
        self.auto_is_off = (
            profile is not None and profile.decision == "none" and profile.prefill_auto == profile.prefill_off
        )
        self.settings = settings
        self.controls = controls
        self.sampling = sampling
        self.journal = journal
        self.forced = [c for c in conditions if c.think != "auto"]
        self.sweep = [c for c in conditions if c.think == "auto"]
        self.counts = RunCounts()
        self.cancel = threading.Event()
        self._counts_lock = threading.Lock()

    def run(self, items: Sequence[EvalItem], progress: Callable[[int, int], None] | None = None) -> RunCounts:
        """Evaluate every item; `progress(done, total)` after each. Ctrl-C stops cleanly (Interrupted)."""
        total = len(items)
        done = 0
        if progress:
            progress(0, total)
        try:
            if len(self.engines) == 1:
                for item in items:
                    self._item(item, self.engines[0])
                    done += 1
                    if progress:
                        progress(done, total)
            else:
                done = self._run_parallel(items, progress)
        except KeyboardInterrupt:
            self.cancel.set()
            raise Interrupted(
                "evaluation interrupted: finished items are saved", "run the same command again to resume"
            ) from None
        finally:
            for memo in self.engines:
                self.counts.scored += memo.scored
                self.counts.score_reuses += memo.reused
                memo.scored = memo.reused = 0
        return self.counts

    def _run_parallel(self, items: Sequence[EvalItem], progress: Callable[[int, int], None] | None) -> int:
        idle: queue.Queue[ScoreMemo] = queue.Queue()
        for memo in self.engines:
            idle.put(memo)

        def work(item: EvalItem) -> None:
            memo = idle.get()
            try:
                self._item(item, memo)
            finally:
                idle.put(memo)

        done = 0
        pool = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="katpilot-eval")
        try:
            for future in [pool.submit(work, item) for item in items]:
                future.result()
                done += 1
                if progress:
                    progress(done, len(items))
        finally:
            if done < len(items):
                self.cancel.set()  # an item failed or Ctrl-C: stop the other workers' streams too
            pool.shutdown(wait=True, cancel_futures=True)
        return done

    # one item ------------------------------------------------------------------------------------

    def _item(self, item: EvalItem, engine: ScoreMemo) -> None:
        engine.forget()
        for condition in self.forced:
            if self.journal.get(item.id, condition.label) is None:
                self._keep(self._generate(item, engine, condition))
            else:
                self._count(skipped=1)
        for condition in self._sweep_order():
            if self.journal.get(item.id, condition.label) is not None:
                self._count(skipped=1)
                continue
            assert condition.threshold is not None
            off = self.journal.get(item.id, "off") if self.auto_is_off else None
            if off is not None and off.finish_reason != "context":
                self._keep(_undecided(off, condition), reused=True)
                continue
            earlier = [r for r in self.journal.for_item(item.id) if r.think == "auto"]
            source = next(
                (
                    r
                    for r in earlier
                    if r.reused_from is None and r.finish_reason != "context" and reusable(r, condition.threshold)
                ),
                None,
            )
            if source is not None:
                self._keep(_reused(source, condition), reused=True)
            else:
                self._keep(self._generate(item, engine, condition))

    def _sweep_order(self) -> list[Condition]:
        """The configured threshold first (the response `katpilot ask` would give), then the others."""
        first = [c for c in self.sweep if c.threshold == self.controls.threshold]
        return first + [c for c in self.sweep if c not in first]

    def _keep(self, record: Record, reused: bool = False) -> None:
        self.journal.add(record)
        self._count(reused=int(reused), generated=int(not reused))

    def _count(self, generated: int = 0, reused: int = 0, skipped: int = 0) -> None:
        with self._counts_lock:
            self.counts.generated += generated
            self.counts.reused += reused
            self.counts.skipped += skipped

    def _generate(self, item: EvalItem, engine: ScoreMemo, condition: Condition) -> Record:
        """One response through the session, graded. A prompt too long for the window fails the item."""
        session = new_session(engine, self.settings, sampling=self.sampling)
        threshold = condition.threshold if condition.threshold is not None else self.controls.threshold
        controls = self.controls.updated(think=condition.think, threshold=threshold)
        try:
            response = session.ask(item.prompt, controls, self.cancel)
        except ContextOverflowError as exc:
            return _failed(item, condition, f"context: {exc.one_line()}")
        if response.stats.finish_reason == "cancelled":
            raise KeyboardInterrupt  # never journal a cut-off answer: a resumed run generates it again
        verdict = grade(item, response.answer)
        return _record(item, condition, response, verdict.passed, verdict.verifier, verdict.reason)


def _record(
    item: EvalItem, condition: Condition, response: Response, passed: bool, verifier: str, reason: str | None
) -> Record:
    stats = response.stats
    return Record(
        item=item.id,
        condition=condition.label,
        think=condition.think,
        threshold=condition.threshold,
        mode=response.mode,
        decided_by=response.decided_by,
        p_on=response.p_on,
        tokens={
            "judge": stats.judge_tokens,
            "think": stats.think_tokens,
            "answer": stats.answer_tokens,
            "other": stats.other_tokens,
            "completion": stats.completion_tokens,
            "prompt": stats.prompt_tokens,
        },
        latency_s=stats.total_s,
        finish_reason=stats.finish_reason,
        passed=passed,
        verifier=verifier,
        reason=reason,
        answer=response.answer,
        notices=list(response.notices),
    )


def _reused(source: Record, condition: Condition) -> Record:
    """The source's response and verdict, filed under another threshold that decides the same."""
    data = source.to_json() | {"condition": condition.label, "threshold": condition.threshold}
    return Record.from_json(data | {"reused_from": source.condition})


def _undecided(off: Record, condition: Condition) -> Record:
    """A plain model's off response filed as its auto response: the same text, decided by nobody."""
    data = off.to_json() | {"condition": condition.label, "think": "auto", "threshold": condition.threshold}
    return Record.from_json(data | {"decided_by": "none", "p_on": None, "reused_from": "off"})


def _failed(item: EvalItem, condition: Condition, reason: str) -> Record:
    zero = dict.fromkeys(("judge", "think", "answer", "other", "completion", "prompt"), 0)
    return Record(
        item=item.id,
        condition=condition.label,
        think=condition.think,
        threshold=condition.threshold,
        mode="on" if condition.think == "on" else "off",
        decided_by="user" if condition.think != "auto" else "none",
        p_on=None,
        tokens=zero,
        latency_s=0.0,
        finish_reason="context",
        passed=False,
        verifier=item.verifier,
        reason=reason,
        answer="",
    )
