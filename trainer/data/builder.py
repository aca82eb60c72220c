"""Building the dataset: each task answered in both modes, graded, tagged, kept or dropped, journaled.

For one task (see `tagging` for the rule):
1. the teacher answers K times with thinking off and K times on; eval's `grade` judges each answer
   against the ground truth the mining kept (or, for a prompt without one, the critic does);
2. the mode is chosen from the pass rates;
3. think-on: the thinker's verified answers, shortest first, go to the critic (a second prompt,
   possibly a second model); a rejected one is replaced by a fresh attempt, up to `retries`, and a
   task left with none is dropped. Think-off: the shortest verified answer, or the mining's own
   ground truth when the teacher never got it right (a direct answer is a direct answer);
4. a judge sentence is written (the teacher's own, or a template when it gave none usable);
5. a share of tasks also yields an intent record: the user asks to think carefully, or for a direct
   answer, and the record's mode follows the request (KAT-V1's intent-aware prompting).
Every record is checked before it is written: its AutoThink rendering must parse with the gate into
exactly its parts, and no string in it may hold anything the index's secret filter would withhold.

The journal makes a killed run resumable: `records.jsonl` (the dataset) gets a task's records in one
write, then `.katpilot/tasks.jsonl` gets the task's outcome. On restart, records of a task with no
outcome (killed in between) are dropped and the task runs again, so nothing is duplicated or lost.
"""

from __future__ import annotations

import hashlib
import json
import queue
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from katpilot import gate
from katpilot.errors import KatpilotError
from katpilot.eval.items import grade, item_to_json
from katpilot.eval.records import DurableLog, check_fingerprint, make_output_dir, read_journal, write_atomic
from katpilot.index.secrets import redact
from katpilot.terms import Mode
from trainer.data.tagging import DEFAULT_MARGIN, DEFAULT_RANDOM_SHARE, choose_mode
from trainer.data.tasks import Task, encodable
from trainer.data.teachers import Attempt, ModelTeacher, Teacher, template_judge

RECORDS_FILE = "records.jsonl"
STATE_DIR = ".katpilot"
TASKS_FILE = "tasks.jsonl"
RUN_FILE = "run.json"
INTENT_TEXT = {
    "think": "Think carefully, step by step, before you answer.",
    "direct": "Just give the answer, no reasoning.",
}
INTENT_JUDGE = {
    "think": "The user asked me to think carefully, so I will reason before answering.",
    "direct": "The user asked for a direct answer, so I will answer without reasoning.",
}


@dataclass(frozen=True)
class DataOptions:
    """The knobs of the tagging and the agents (all recorded in the run's fingerprint)."""

    votes: int = 2  # K answers per mode
    margin: float = DEFAULT_MARGIN
    random_share: float = DEFAULT_RANDOM_SHARE
    intent_share: float = 0.1
    retries: int = 2  # fresh think-on attempts after the critic rejects them all
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.votes < 1:
            problems.append("--votes must be at least 1")
        if not 0 <= self.margin <= 1:
            problems.append("--margin must be within [0, 1]")
        for name in ("random_share", "intent_share"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"--{name.replace('_', '-')} must be within [0, 1]")
        if self.retries < 0:
            problems.append("--retries must be 0 or more")
        if problems:
            raise KatpilotError("; ".join(problems), "fix the option")


@dataclass
class Outcome:
    """What became of one task (one line of `.katpilot/tasks.jsonl`)."""

    task: str
    kind: str
    status: str  # "kept" or "dropped"
    why: str | None = None  # dropped: the reason
    records: int = 0
    mode: str | None = None
    chosen_by: str | None = None
    pass_rates: dict[str, float] = field(default_factory=dict)
    critic_rejections: int = 0
    withheld: int = 0  # records not written because a secret filter matched
    unrenderable: int = 0  # records not written because a part holds AutoThink tags


class DataJournal:
    """The output directory: the dataset, the tasks' outcomes and the run's fingerprint."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.out = out
        make_output_dir(out)
        make_output_dir(out / STATE_DIR)
        check_fingerprint(out / STATE_DIR / RUN_FILE, fingerprint, out)
        self.outcomes: dict[str, Outcome] = {}
        for _, row in read_journal(out / STATE_DIR / TASKS_FILE, out):
            try:
                outcome = Outcome(**row)
            except TypeError as exc:
                raise KatpilotError(
                    f"{out / STATE_DIR / TASKS_FILE} holds a bad line ({exc})", f"delete {out}"
                ) from None
            self.outcomes[outcome.task] = outcome
        self.records = self._keep_finished(read_journal(out / RECORDS_FILE, out))
        self._records = DurableLog(out / RECORDS_FILE, out)
        self._tasks = DurableLog(out / STATE_DIR / TASKS_FILE, out)
        self._lock = threading.Lock()

    def _keep_finished(self, rows: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Records of tasks that have an outcome; the file is rewritten without the others."""
        kept = [row for _, row in rows if outcome_key(str(row.get("task"))) in self.outcomes]
        if len(kept) != len(rows):
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept)
            write_atomic(self.out / RECORDS_FILE, text)
        return kept

    def done(self, task_id: str) -> bool:
        return outcome_key(task_id) in self.outcomes

    def finish(self, records: list[dict[str, Any]], outcome: Outcome) -> None:
        """A task's records, then its outcome: each durable before the next step."""
        with self._lock:
            if records:
                self._records.append(records)
            self._tasks.append([outcome.__dict__])
            self.records += records
            self.outcomes[outcome.task] = outcome

    def close(self) -> None:
        self._records.close()
        self._tasks.close()


@dataclass
class Workers:
    """The teachers one worker uses: the model teacher (and its critic), the programmatic one."""

    model: ModelTeacher | None
    critic: ModelTeacher | None
    programmatic: Teacher | None

    def teacher_for(self, task: Task) -> Teacher:
        if self.programmatic is not None and self.programmatic.can_answer(task):
            return self.programmatic
        if self.model is None:
            raise KatpilotError(
                f"task {task.id} ({task.kind}) needs a model teacher",
                "give --teacher MODEL (the programmatic teacher answers only the arithmetic ladder)",
            )
        return self.model

    def teacher_seconds(self) -> float:
        """Time inside model calls (the critic may be the teacher itself: counted once)."""
        teachers = {id(t): t for t in (self.model, self.critic) if t is not None}
        return sum(t.seconds for t in teachers.values())


class DatasetBuilder:
    """Runs tasks through the teachers into the journal, one worker per set of teachers."""

    def __init__(self, workers: Sequence[Workers], journal: DataJournal, options: DataOptions) -> None:
        self.workers = list(workers)
        self.journal = journal
        self.options = options

    def run(self, tasks: Sequence[Task], progress: Callable[[int, int], None] | None = None) -> int:
        """Every task not done yet; returns how many ran now. Ctrl-C stops; finished tasks are kept."""
        todo = [t for t in tasks if not self.journal.done(t.id)]
        for task in todo:
            self.workers[0].teacher_for(task)  # a missing teacher is an error before any work
        idle: queue.Queue[Workers] = queue.Queue()
        for w in self.workers:
            idle.put(w)

        def work(task: Task) -> None:
            w = idle.get()
            try:
                records, outcome = self.build(task, w)
                self.journal.finish(records, outcome)
            finally:
                idle.put(w)

        done = len(tasks) - len(todo)
        if progress:
            progress(done, len(tasks))
        pool = ThreadPoolExecutor(max_workers=len(self.workers), thread_name_prefix="katpilot-data")
        futures = [pool.submit(work, task) for task in todo]
        try:
            for future in futures:
                future.result()
                done += 1
                if progress:
                    progress(done, len(tasks))
        except BaseException:
            for w in self.workers:
                for t in (w.model, w.critic):
                    if t is not None:
                        t.cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return len(todo)

    # one task --------------------------------------------------------------------------------------

    def build(self, task: Task, w: Workers) -> tuple[list[dict[str, Any]], Outcome]:
        """The task's records and outcome (steps 1 to 5 of the module docstring)."""
        teacher = w.teacher_for(task)
        critic = w.critic if teacher is w.model else None
        opts = self.options
        attempts = {mode: [teacher.attempt(task, mode, k) for k in range(opts.votes)] for mode in ("off", "on")}
        outcome = Outcome(outcome_key(task.id), task.kind, "dropped")
        verdicts = {mode: [self._passes(task, a, critic, outcome) for a in attempts[mode]] for mode in ("off", "on")}
        rates = {mode: sum(v[0] for v in verdicts[mode]) / opts.votes for mode in ("off", "on")}
        tagging = choose_mode(task.id, rates["off"], rates["on"], opts.margin, opts.random_share, opts.seed)
        outcome.mode, outcome.chosen_by, outcome.pass_rates = tagging.mode, tagging.chosen_by, rates
        chosen = self._answer(task, tagging.mode, teacher, critic, attempts, verdicts, outcome)
        if chosen is None:
            outcome.why = f"no verified think-{tagging.mode} answer"
            return [], outcome
        judge = teacher.judge_sentence(task, tagging.mode) or template_judge(task, tagging.mode)
        common = {"pass_rates": rates, "verdicts": _verdict_lists(verdicts), "teacher": teacher.name}
        shaped = [(task.id, task.item.prompt, tagging.mode, tagging.chosen_by, "", judge, chosen)]
        intent = self._intent(task)
        if intent is not None:
            mode: Mode = "on" if intent == "think" else "off"
            answer = (
                chosen
                if mode == tagging.mode
                else self._answer(task, mode, teacher, critic, attempts, verdicts, outcome)
            )
            if answer is not None:
                prompt = f"{task.item.prompt}\n\n{INTENT_TEXT[intent]}"
                shaped.append((f"{task.id}#{intent}", prompt, mode, "intent", intent, INTENT_JUDGE[intent], answer))
        records = []
        for record_id, prompt, mode, chosen_by, intent_text, judge_text, answer in shaped:
            record = self._record(task, record_id, prompt, mode, chosen_by, intent_text, judge_text, answer)
            if record is None:
                outcome.unrenderable += 1
                continue
            consulted = critic is not None and (mode == "on" or not task.ground_truth)
            record.update(common, critic=critic.name if consulted and critic is not None else "")
            records.append(record)
        kept = [r for r in records if not _holds_secret(r)]
        outcome.withheld = len(records) - len(kept)
        outcome.records = len(kept)
        outcome.status = "kept" if kept else "dropped"
        if not kept:
            outcome.why = "withheld: a secret filter matched" if outcome.withheld else "the answer cannot be rendered"
        return kept, outcome

    def _passes(
        self, task: Task, attempt: Attempt, critic: ModelTeacher | None, outcome: Outcome | None = None
    ) -> tuple[bool, str, str | None]:
        """(passed, verifier, reason) for one attempt."""
        if attempt.finish_reason != "stop":
            return False, task.item.verifier, f"the answer was cut off ({attempt.finish_reason})"
        if not attempt.answer or not all(_usable(t) for t in (attempt.think, attempt.answer)):
            return False, task.item.verifier, "empty answer, AutoThink tags, or characters that are not text"
        if attempt.mode == "on" and not attempt.think:
            return False, task.item.verifier, "think-on answer without reasoning"
        if not task.ground_truth:
            if critic is None:
                return False, "critic", "no ground truth and no critic"
            if critic.approves(task, attempt):
                return True, "critic", None
            if outcome is not None:
                outcome.critic_rejections += 1
            return False, "critic", "the critic rejected it"
        verdict = grade(task.item, attempt.answer)
        return verdict.passed, verdict.verifier, verdict.reason

    def _answer(
        self,
        task: Task,
        mode: Mode,
        teacher: Teacher,
        critic: ModelTeacher | None,
        attempts: dict[str, list[Attempt]],
        verdicts: dict[str, list[tuple[bool, str, str | None]]],
        outcome: Outcome,
    ) -> _Chosen | None:
        """The answer a record of `mode` keeps (step 3), or None."""
        verified = [(a, v) for a, v in zip(attempts[mode], verdicts[mode], strict=True) if v[0]]
        verified.sort(key=lambda pair: pair[0].tokens)
        if mode == "off":
            if verified:
                return _Chosen(verified[0][0], "teacher", verified[0][1])
            reference = task.reference.strip()
            if task.ground_truth and reference and _usable(reference):
                return _Chosen(Attempt("off", "", reference, 0), "reference", grade_tuple(task))
            return None
        candidates = list(verified)
        for attempt_round in range(self.options.retries + 1):
            for attempt, verdict in candidates:
                if critic is None or not task.ground_truth or critic.approves(task, attempt):
                    return _Chosen(attempt, "teacher", verdict)
                outcome.critic_rejections += 1
            if attempt_round < self.options.retries:
                fresh = teacher.attempt(task, "on", self.options.votes + attempt_round)
                verdict = self._passes(task, fresh, critic, outcome)
                candidates = [(fresh, verdict)] if verdict[0] else []
        return None

    def _intent(self, task: Task) -> str | None:
        rng = random.Random(f"katpilot-intent:{self.options.seed}:{task.id}")
        if rng.random() >= self.options.intent_share:
            return None
        return "think" if rng.random() < 0.5 else "direct"

    def _record(
        self,
        task: Task,
        record_id: str,
        prompt: str,
        mode: Mode,
        chosen_by: str,
        intent: str,
        judge: str,
        chosen: _Chosen,
    ) -> dict[str, Any] | None:
        """The dataset row; None when the parts cannot be rendered so that the gate reads them back."""
        parts = gate.Parts(
            judge, mode, chosen.attempt.think.strip() if mode == "on" else "", chosen.attempt.answer.strip()
        )
        try:
            text = gate.render_kat(parts)
        except ValueError:
            return None  # a tag in the judge or answer (a repository about LLMs), or an unstripped part
        if gate.split(text) != parts:
            return None
        passed, verifier, reason = chosen.verdict
        return {
            "id": record_id,
            "task": task.id,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
            "mode": mode,
            "judge": parts.judge,
            "think": parts.think,
            "answer": parts.answer,
            "kind": task.kind,
            "level": task.item.level or 0,  # 0: the source grades no difficulty
            "source_file": task.source_file or "",
            "symbol": task.symbol or "",
            "verifier": verifier,
            "verdict": {"passed": passed, "reason": reason or ""},
            "item": item_to_json(task.item) if task.ground_truth else None,  # what RL grades rollouts with
            "answer_from": chosen.source,
            "chosen_by": chosen_by,
            "intent": intent,
        }


@dataclass(frozen=True)
class _Chosen:
    attempt: Attempt
    source: str  # "teacher" or "reference"
    verdict: tuple[bool, str, str | None]


def grade_tuple(task: Task) -> tuple[bool, str, str | None]:
    verdict = grade(task.item, task.reference)
    return verdict.passed, verdict.verifier, verdict.reason


def outcome_key(task_id: str) -> str:
    """The task id as the outcome log stores it: hashed when it would show a secret (a file name)."""
    if redact(task_id)[1]:
        return "withheld:" + hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return task_id


def _usable(text: str) -> bool:
    """Text a record can hold: encodable (no lone surrogates) and free of AutoThink tags."""
    return encodable(text) and not gate.has_tag(text)


def _verdict_lists(verdicts: dict[str, list[tuple[bool, str, str | None]]]) -> dict[str, list[bool]]:
    return {mode: [v[0] for v in rows] for mode, rows in verdicts.items()}


def _holds_secret(record: dict[str, Any]) -> bool:
    """Whether any string in the record is something the index's secret filter withholds."""
    try:
        return any(redact(text)[1] for text in _strings(record))
    except UnicodeEncodeError:
        return True  # not text a dataset can hold either


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
