"""`katpilot train data` with the embedded model as teacher: records per second, how much of the
wall time is spent outside teacher calls, and what `--jobs` buys on this machine.

    python bench/train_data.py [--repo katpilot/index] [--limit 24] [--votes 1] [--max-tokens 48] [--jobs 2]

Target (issue 17): the share of wall time outside teacher calls (mining, grading, the sandbox,
journaling, the card) at most 10%. Teacher time is measured inside the teachers (every session call
of the teacher and the critic), wall time around the whole `run_data`, in the same run. The repo is
one of ours by default (real code, no download).

`--jobs N` (N > 1) then builds the same tasks again with N local engines sharing the threads, as
`katpilot train data --jobs N` does, and prints the records-per-second ratio of the two runs, measured
back to back in one process (these machines are noisy from hour to hour).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from katpilot import config as config_mod
from katpilot.eval.command import open_engines
from trainer.data.builder import DataOptions
from trainer.data.command import DataRun, DataSummary, run_data
from trainer.data.tasks import REPO_KINDS

ROOT = Path(__file__).resolve().parent.parent


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def build(settings: config_mod.Settings, args: argparse.Namespace, jobs: int) -> tuple[DataSummary, float]:
    """One dataset from scratch with `jobs` engines; (summary, wall time with the engines loaded)."""
    started = time.perf_counter()
    with open_engines(settings, jobs, _stderr, None) as engines, tempfile.TemporaryDirectory() as tmp:
        run = DataRun(
            out=Path(tmp) / "data",
            kinds=(*REPO_KINDS, "arithmetic"),
            repo=args.repo,
            limit=args.limit,
            jobs=jobs,
            options=DataOptions(votes=args.votes),
        )
        summary = run_data(settings, run, engines=engines)
    return summary, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repo", type=Path, default=ROOT / "katpilot" / "index")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--votes", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--jobs", type=int, default=1, help="also build with this many engines and compare")
    args = parser.parse_args()

    settings = replace(config_mod.load_settings().settings, max_tokens=args.max_tokens)
    summary, wall = build(settings, args, 1)
    print(f"repo {args.repo}, {summary.tasks} tasks, votes {args.votes}, max tokens {args.max_tokens}")
    print(f"records            {summary.records} ({summary.think_on} think-on)")
    print(f"wall time          {summary.wall_s:.1f} s (with the engine loaded: {wall:.1f} s)")
    print(f"records/s          {summary.records / summary.wall_s:.3f}")
    print(f"teacher time       {summary.teacher_s:.1f} s")
    print(f"outside teacher    {100 * summary.outside_share:.1f}% of wall time (target <= 10%)")
    if args.jobs > 1:
        parallel, wall_n = build(settings, args, args.jobs)
        print(
            f"--jobs {args.jobs}:         {parallel.records} records in {parallel.wall_s:.1f} s "
            f"(with the engines loaded: {wall_n:.1f} s), {parallel.records / parallel.wall_s:.3f} records/s"
        )
        one = summary.records / summary.wall_s
        print(f"records/s ratio    {parallel.records / parallel.wall_s / one:.2f}x (--jobs {args.jobs} against 1)")


if __name__ == "__main__":
    main()
