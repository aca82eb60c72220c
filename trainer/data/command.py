"""`katpilot train data` end to end: tasks in, teachers loaded through `katpilot.models`, dataset out.

The CLI parses flags into settings and `DataRun`; this module collects the tasks, loads the teacher
(and critic) engines the way every front end does, runs the builder into the journal and writes the
card. `--jobs N` runs N workers, each with its own engine (and critic): N connections to a remote
teacher, or N local llama.cpp engines sharing the threads (`katpilot.eval.command.open_engines`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from katpilot.config import Settings
from katpilot.engine.base import Engine
from katpilot.errors import KatpilotError
from katpilot.eval.command import open_engines, progress_bar
from katpilot.eval.records import foreign_entries, write_atomic
from katpilot.models import profile_for, sampling_params
from trainer.data.builder import RECORDS_FILE, STATE_DIR, DataJournal, DataOptions, DatasetBuilder, Workers
from trainer.data.card import render_card
from trainer.data.sources import collect_tasks
from trainer.data.tasks import Task
from trainer.data.teachers import DEFAULT_SPAN, PROGRAMMATIC, ModelTeacher, ProgrammaticTeacher

CARD_FILE = "README.md"
SAME_AS_TEACHER = "teacher"


@dataclass(frozen=True)
class DataRun:
    """What to build: `katpilot train data`'s arguments."""

    out: Path
    kinds: tuple[str, ...]
    repo: Path | None = None
    teacher: str | None = None  # a model (name, path, URL) or "programmatic"; None: programmatic only
    critic: str = SAME_AS_TEACHER  # "teacher", "none", or another model
    prompts: Path | None = None
    limit: int | None = None
    drill: int = 0  # arithmetic problems added after `limit` (sources.drill_tasks)
    drill_levels: tuple[int, ...] = (1,)  # their operation counts, in turn
    jobs: int = 1
    span: int = DEFAULT_SPAN  # the programmatic teacher's direct-answer span
    options: DataOptions = field(default_factory=DataOptions)


@dataclass(frozen=True)
class DataSummary:
    out: Path
    tasks: int
    ran: int  # tasks this invocation ran (the rest were done before)
    records: int
    think_on: int
    wall_s: float
    teacher_s: float  # time inside teacher and critic calls

    @property
    def outside_share(self) -> float:
        """The share of wall time spent outside teacher calls (bench/train_data.py's figure)."""
        return max(0.0, 1 - self.teacher_s / self.wall_s) if self.wall_s > 0 else 0.0


def run_data(
    settings: Settings,
    run: DataRun,
    echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    show_progress: bool = False,
    engines: Sequence[Engine] | None = None,
) -> DataSummary:
    """Build (or resume) the dataset. `engines` replace loading the teacher (tests, benchmarks)."""
    started = time.perf_counter()
    if run.limit is not None and run.limit < 1:
        raise KatpilotError("--limit must be at least 1", "give how many tasks to run")
    if run.jobs < 1:
        raise KatpilotError("--jobs must be at least 1", "give how many workers to run at once")
    if run.repo is not None and not run.repo.is_dir():
        raise KatpilotError(f"{run.repo} is not a directory", "give the repository's root directory")
    tasks = collect_tasks(
        run.repo,
        run.kinds,
        run.prompts,
        seed=run.options.seed,
        limit=run.limit,
        drill=run.drill,
        drill_levels=run.drill_levels,
    )
    if not tasks:
        raise KatpilotError("no tasks were found", "give a repository with functions, or other --tasks")
    programmatic = ProgrammaticTeacher(run.span)  # the arithmetic ladder is always computed
    model_spec = None if run.teacher in (None, PROGRAMMATIC) else run.teacher
    with ExitStack() as stack:
        teacher_engines: list[Engine] = []
        if model_spec is not None or engines:
            teacher_settings = replace(settings, model=model_spec) if model_spec else settings
            teacher_engines = stack.enter_context(open_engines(teacher_settings, run.jobs, echo, engines))
        critic_engines = stack.enter_context(_critic_engines(settings, run, echo, teacher_engines))
        workers = _workers(settings, run, teacher_engines, critic_engines, programmatic)
        for task in tasks:
            workers[0].teacher_for(task)  # a missing teacher is an error before the directory is made
        if run.options.votes > 1 and teacher_engines and settings.temperature == 0:
            echo("katpilot: --temperature 0 makes every vote the same answer; sample with --temperature 0.7")
        _check_out(run.out)
        fingerprint = _fingerprint(settings, run, tasks, workers[0], teacher_engines)
        journal = DataJournal(run.out, fingerprint)
        stack.callback(journal.close)
        if journal.outcomes:
            echo(f"katpilot: resuming {run.out}: {len(journal.outcomes)} task(s) already done")
        builder = DatasetBuilder(workers, journal, run.options)
        with progress_bar(show_progress, "train data") as progress:
            ran = builder.run(tasks, progress)
        card = render_card(run.out.resolve().name, fingerprint, journal.records, list(journal.outcomes.values()))
        write_atomic(run.out / CARD_FILE, card)
        records = list(journal.records)
    return DataSummary(
        out=run.out,
        tasks=len(tasks),
        ran=ran,
        records=len(records),
        think_on=sum(r["mode"] == "on" for r in records),
        wall_s=time.perf_counter() - started,
        teacher_s=sum(w.teacher_seconds() for w in workers),
    )


@contextmanager
def _critic_engines(
    settings: Settings, run: DataRun, echo: Callable[[str], None], teacher_engines: list[Engine]
) -> Iterator[list[Engine] | None]:
    """None (no critic), the teacher's own engines, or another model's."""
    if run.critic == "none" or not teacher_engines:
        yield None
    elif run.critic == SAME_AS_TEACHER:
        yield teacher_engines
    else:
        critic_settings = replace(settings, model=run.critic)
        # a worker asks its teacher, then its critic: one engine of each pair decodes at a time
        with open_engines(critic_settings, len(teacher_engines), echo, None) as engines:
            yield engines


def _check_out(out: Path) -> None:
    """Refuse a directory that holds other things: the card would replace its README.md."""
    made_by_us = (out / STATE_DIR / "run.json").exists()
    if out.exists() and not made_by_us and (not out.is_dir() or foreign_entries(out)):
        raise KatpilotError(f"{out} exists and is not a dataset katpilot made", "give --out a new or empty directory")


def _workers(
    settings: Settings,
    run: DataRun,
    teacher_engines: list[Engine],
    critic_engines: list[Engine] | None,
    programmatic: ProgrammaticTeacher | None,
) -> list[Workers]:
    seed = run.options.seed
    if not teacher_engines:
        return [Workers(None, None, programmatic)]
    workers = []
    # a local critic may have fewer engines than a remote teacher (capped at the threads): one pair per worker
    count = len(teacher_engines) if critic_engines is None else min(len(teacher_engines), len(critic_engines))
    for i, engine in enumerate(teacher_engines[:count]):
        model = ModelTeacher(engine, settings, seed)
        critic = None
        if critic_engines is not None:
            critic = model if critic_engines is teacher_engines else ModelTeacher(critic_engines[i], settings, seed)
        workers.append(Workers(model, critic, programmatic))
    return workers


def _fingerprint(
    settings: Settings, run: DataRun, tasks: list[Task], first: Workers, engines: list[Engine]
) -> dict[str, object]:
    """What the records depend on: a rerun that changes any of it is refused (limit and jobs may change)."""
    info = engines[0].info if engines else None
    return {
        "repo": str(run.repo.resolve()) if run.repo else None,
        "kinds": sorted(run.kinds),
        "prompts": str(run.prompts.resolve()) if run.prompts else None,
        "teacher": info.name if info else PROGRAMMATIC,
        "teacher_path": info.path if info else None,
        "profile": profile_for(engines[0], settings).name if engines else None,
        "critic": first.critic.name if first.critic else None,
        "span": run.span,
        **({"drill_levels": list(run.drill_levels)} if run.drill_levels != (1,) else {}),  # ids say no level
        **asdict(run.options),
        **({"sampling": asdict(sampling_params(settings))} if engines else {}),
        "system_prompt": settings.system_prompt if engines else None,
    }


def summary_lines(summary: DataSummary) -> list[str]:
    """What the command prints when it is done."""
    share = f"{100 * summary.think_on / summary.records:.0f}%" if summary.records else "n/a"
    return [
        f"{summary.records} records from {summary.tasks} tasks (think-on {summary.think_on}, {share}); "
        f"{summary.ran} task(s) run now in {summary.wall_s:.1f} s",
        f"dataset: {summary.out / RECORDS_FILE}",
        f"card: {summary.out / CARD_FILE}",
    ]
