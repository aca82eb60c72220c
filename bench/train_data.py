"""`katpilot train data` with the embedded model as teacher: records per second, and how much of the
wall time is spent outside teacher calls.

    python bench/train_data.py [--repo katpilot/index] [--limit 24] [--votes 1] [--max-tokens 48]

Target (issue 17): the share of wall time outside teacher calls (mining, grading, the sandbox,
journaling, the card) at most 10%. Teacher time is measured inside the teachers (every session call
of the teacher and the critic), wall time around the whole `run_data`, in the same run. The repo is
one of ours by default (real code, no download).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from katpilot import config as config_mod
from katpilot.models import load_engine
from trainer.data.builder import DataOptions
from trainer.data.command import DataRun, run_data
from trainer.data.tasks import REPO_KINDS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repo", type=Path, default=ROOT / "katpilot" / "index")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--votes", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    settings = replace(config_mod.load_settings().settings, max_tokens=args.max_tokens)
    engine = load_engine(settings)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = DataRun(
                out=Path(tmp) / "data",
                kinds=(*REPO_KINDS, "arithmetic"),
                repo=args.repo,
                limit=args.limit,
                options=DataOptions(votes=args.votes),
            )
            started = time.perf_counter()
            summary = run_data(settings, run, engines=[engine])
            wall = time.perf_counter() - started
    finally:
        engine.close()
    print(f"repo {args.repo}, {summary.tasks} tasks, votes {args.votes}, max tokens {args.max_tokens}")
    print(f"records            {summary.records} ({summary.think_on} think-on)")
    print(f"wall time          {summary.wall_s:.1f} s (with the engine loaded: {wall:.1f} s)")
    print(f"records/s          {summary.records / summary.wall_s:.3f}")
    print(f"teacher time       {summary.teacher_s:.1f} s")
    print(f"outside teacher    {100 * summary.outside_share:.1f}% of wall time (target <= 10%)")


if __name__ == "__main__":
    main()
