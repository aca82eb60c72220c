"""`katpilot eval` end to end: options in, the report, results.json and the plot out.

The CLI parses flags into settings and `EvalOptions`; this module loads the suite and the engine(s)
through `katpilot.models` (the one way every front end does), runs, and writes the files.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from katpilot.config import Settings
from katpilot.engine.base import Engine
from katpilot.errors import KatpilotError
from katpilot.eval.items import EvalItem
from katpilot.eval.records import FORMAT_KEY, RunJournal, write_atomic
from katpilot.eval.results import EvalResults, build_results
from katpilot.eval.runner import EvalRunner, conditions_for
from katpilot.eval.suites import Suite, load_suite
from katpilot.gguf_file import content_digest
from katpilot.models import load_engine, profile_for, remote_spec, sampling_params, think_controls
from katpilot.terms import THINK_MODES, ThinkMode

RESULTS_FILE = "results.json"
JOURNAL_FORMAT = 2  # 2: the model keyed on its contents, the suite on all its items (2026-12-07)
REPORT_FILE = "report.md"
MAX_SWEEP_POINTS = 101


@dataclass(frozen=True)
class EvalOptions:
    suite: str
    modes: tuple[ThinkMode, ...] = ("auto", "on", "off")
    thresholds: tuple[float, ...] | None = None  # None: the configured threshold only
    limit: int | None = None
    jobs: int = 1
    out: Path | None = None  # None: katpilot-eval/<suite>-<model> in the working directory
    seed: int = 0
    repo: Path | None = None
    plot: bool = True


def parse_modes(text: str) -> tuple[ThinkMode, ...]:
    """ "auto,on,off" -> ("auto", "on", "off"); an unknown mode is an error naming the known ones."""
    modes: list[ThinkMode] = []
    for part in (p.strip() for p in text.split(",")):
        match = next((m for m in THINK_MODES if m == part), None)
        if match is None:
            raise KatpilotError(f"--think {part!r} is not a think mode", "give a comma-separated list of auto, on, off")
        if match not in modes:
            modes.append(match)
    return tuple(modes)


def parse_thresholds(text: str) -> tuple[float, ...]:
    """ "0:1:0.1" (start:stop:step, stop included) or "0.3,0.5,0.7"; every value within [0, 1].

    Values are rounded to 6 decimals (labels and records key on them), duplicates dropped.
    """
    usage = "write start:stop:step (0:1:0.1) or a list (0.3,0.5,0.7), values within [0, 1]"
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if not all(math.isfinite(v) for v in (start, stop, step)):
                raise KatpilotError(f"--thresholds {text!r} is not finite", usage)
            if step <= 0 or stop < start:
                raise KatpilotError(f"--thresholds {text!r}: the step must be > 0 and stop >= start", usage)
            if (stop - start) / step + 1 > MAX_SWEEP_POINTS:
                raise KatpilotError(f"--thresholds {text} is more than {MAX_SWEEP_POINTS} points", "use a larger step")
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 6) for i in range(count)]
        else:
            values = [round(float(p), 6) for p in text.split(",") if p.strip()]
    except ValueError:
        raise KatpilotError(f"--thresholds {text!r} is not a sweep", usage) from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise KatpilotError(f"--thresholds {text!r} must hold values within [0, 1]", usage)
    return tuple(dict.fromkeys(values))


def items_digest(items: Sequence[EvalItem]) -> str:
    """A hash of what the items ask and how they are checked (ids, prompts, answers, tests)."""
    digest = hashlib.sha256()
    for item in items:
        fields = (
            item.id,
            item.prompt,
            item.verifier,
            item.expected,
            *item.accepted,
            item.tests,
            item.entry_point or "",
            item.prelude,
        )
        digest.update(json.dumps(fields).encode())
    return digest.hexdigest()[:16]


def model_digest(engine: Engine) -> str | None:
    """What identifies the model's contents: a local file's sampled digest; a server's model by name."""
    path = Path(engine.info.path) if engine.info.path else None
    if path is None or not path.is_file():
        return None
    try:
        return content_digest(path)
    except OSError as exc:
        raise KatpilotError(f"cannot read {path} ({exc.strerror or exc})", "check the model file") from None


def default_out(suite: Suite, model: str) -> Path:
    safe = re.sub(r"[^\w.-]+", "-", f"{suite.name}-{model}").strip("-")
    return Path("katpilot-eval") / safe


def run_eval(
    settings: Settings,
    options: EvalOptions,
    echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    show_progress: bool = False,
    engines: Sequence[Engine] | None = None,
) -> tuple[EvalResults, Path]:
    """Run (or resume) the evaluation; returns the results and the output directory.

    `engines` are used instead of loading the configured model (the caller keeps and closes them):
    how tests and benchmarks drive a scripted or already loaded engine through the same path.
    """
    suite = load_suite(options.suite, seed=options.seed, repo=options.repo)
    if options.limit is not None and options.limit < 1:
        raise KatpilotError("--limit must be at least 1", "give how many items to evaluate")
    items = suite.items[: options.limit] if options.limit else suite.items
    controls = think_controls(settings)
    thresholds = options.thresholds or (controls.threshold,)
    conditions = conditions_for(options.modes, thresholds)
    sampling = sampling_params(settings)
    with open_engines(settings, min(options.jobs, len(items)), echo, engines) as engines:
        engine = engines[0]
        profile = profile_for(engine, settings)
        fingerprint = {
            FORMAT_KEY: JOURNAL_FORMAT,
            "suite": suite.name,
            # the whole suite's: another file or repository of the same name differs, a larger --limit does not
            "suite_digest": items_digest(suite.items),  # covers the seed where it changes the items
            "model": engine.info.name,
            "model_digest": model_digest(engine),  # a model re-exported to the same path is another model
            "profile": profile.name,
            "system_prompt": settings.system_prompt,
            "n_ctx": engine.info.n_ctx,
            "budget": controls.budget,
            **asdict(sampling),
        }
        out = options.out or default_out(suite, engine.info.name)
        journal = RunJournal(out, fingerprint)
        try:
            if journal.resumed:
                echo(f"katpilot: resuming {out}: {journal.resumed} record(s) already done")
            runner = EvalRunner(engines, settings, controls, sampling, journal, conditions, profile)
            with progress_bar(show_progress, f"{suite.name}") as progress:
                counts = runner.run(items, progress)
        finally:
            journal.close()
    run = fingerprint | {
        "suite_seed": options.seed,  # the fingerprint's "seed" is the sampling's
        "model_path": engine.info.path,
        "threshold": controls.threshold,
        "modes": list(options.modes),
        "description": suite.description,
    }
    picked = Suite(suite.name, suite.description, list(items))
    results = build_results(run, picked, conditions, journal.records, counts, profile.decision)
    write_outputs(results, out, options.plot)
    return results, out


def write_outputs(results: EvalResults, out: Path, plot: bool = True) -> None:
    """results.json, plot.png / plot.svg and report.md in `out` (each written whole or not at all)."""
    from katpilot.eval.report import render_report

    write_atomic(out / RESULTS_FILE, json.dumps(results.to_json(), indent=1, ensure_ascii=False) + "\n")
    plot_file = None
    if plot:
        from katpilot.eval.plot import save_plot

        save_plot(results, out)
        plot_file = "plot.png"
    write_atomic(out / REPORT_FILE, render_report(results, plot_file))


@contextmanager
def open_engines(
    settings: Settings, jobs: int, echo: Callable[[str], None], given: Sequence[Engine] | None
) -> Iterator[list[Engine]]:
    """One engine per job: for a remote server each keeps its own connection state; locally each is a
    llama.cpp instance with its share of the threads. Why several locally: llama.cpp decodes one stream
    per instance, and one stream of a small model leaves cores idle (SmolLM2-135M on 2 cores: two
    1-thread engines answered 1.5x the tokens per second of one 2-thread engine, the same texts)."""
    if jobs < 1:
        raise KatpilotError("--jobs must be at least 1", "give how many requests to run at once")
    if given:
        yield list(given)
        return
    if jobs > 1 and remote_spec(settings.model, settings) is None:
        from katpilot.engine.local import default_threads, threads_each

        threads = settings.n_threads or default_threads()
        if jobs > threads:  # more engines than threads only share them, at ~200 MB of memory each
            plural = "s" if threads > 1 else ""
            echo(f"katpilot: --jobs {jobs} on {threads} thread{plural}: running {threads} local engine{plural}")
            jobs = threads
        settings = replace(settings, n_threads=threads_each(jobs, threads))
    engines: list[Engine] = []
    try:
        for _ in range(jobs):
            engines.append(load_engine(settings))
        yield engines
    finally:
        for engine in engines:
            engine.close()


@contextmanager
def progress_bar(show: bool, title: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar with ETA on stderr (a terminal only); None otherwise."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("eval", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def summary_lines(results: EvalResults, out: Path) -> list[str]:
    """What the command prints when it is done: one line per condition, the trade, the files."""
    from katpilot.eval.report import NO_DECISION_NOTE, headline_comparisons, model_decided

    lines = []
    for s in results.shown_summaries():
        ci = f" [{100 * s.accuracy_ci.low:.0f}-{100 * s.accuracy_ci.high:.0f}]" if s.accuracy_ci else ""
        lines.append(
            f"{s.condition:<10} accuracy {100 * s.accuracy:5.1f}%{ci}  tokens/item {s.mean_tokens:7.1f}"
            f"  think on {100 * s.think_on_rate:3.0f}%"
        )
    headline = headline_comparisons(results)
    if headline and not model_decided(results, headline[0].auto):
        lines.append(NO_DECISION_NOTE)
    for c in headline:
        if c.token_ratio is not None:
            lines.append(
                f"{c.auto} vs always {c.against}: tokens ×{c.token_ratio:.2f}, accuracy {100 * c.accuracy_difference:+.1f} points"
            )
    if results.sweep is not None and not results.sweep.available and len(results.sweep.thresholds) > 1:
        lines.append(f"threshold sweep unavailable: {results.sweep.why_not}")
    lines.append(f"report: {out / REPORT_FILE}")
    return lines
