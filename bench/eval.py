"""`katpilot eval` against the session used directly, and the sandbox's cost per executed test.

    python bench/eval.py [--rounds 3] [--items 12] [--tests 20]

Targets (issue 15):
- items/s through `katpilot eval` (run_eval: suite, journal with fsync, grading, results.json,
  report and plot) >= 0.95 of the same prompts asked through the session directly, in the same
  process on the same engine, rounds alternating so that drift hits both alike;
- sandbox overhead per executed test <= 50 ms: `python_tests` (limits, audit hook, scratch
  directory, process group) minus running the same program with a bare `python -I -S -c` (the flags the sandbox starts with).

And local `--jobs`: items/s of `katpilot eval --jobs 2` (two llama.cpp engines, each with half the
threads) against `--jobs 1` (one engine with all of them), rounds alternating, and whether every
answer came out the same (greedy).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from katpilot.config import load_settings
from katpilot.engine.local import LocalEngine
from katpilot.eval.command import EvalOptions, run_eval
from katpilot.eval.suites import load_suite
from katpilot.eval.verify import python_tests
from katpilot.models import embedded_model_path, new_session, think_controls

SETTINGS = load_settings({"temperature": 0.0, "max_tokens": 48}).settings
CODE = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


def through_eval(engine: LocalEngine, items: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        options = EvalOptions(suite="arithmetic", modes=("off",), limit=items, out=Path(out))
        start = time.perf_counter()
        run_eval(SETTINGS, options, engines=[engine], echo=lambda _: None)
        return items / (time.perf_counter() - start)


def with_jobs(jobs: int, items: int) -> tuple[float, dict[str, str]]:
    """items/s of arithmetic answers with thinking on (long enough to be decoding-bound), and the answers."""
    settings = load_settings({"temperature": 0.0, "max_tokens": 160}).settings
    with tempfile.TemporaryDirectory() as out:
        options = EvalOptions(suite="arithmetic", modes=("on",), limit=items, jobs=jobs, out=Path(out), plot=False)
        start = time.perf_counter()
        results, _ = run_eval(settings, options, echo=lambda _: None)
        return items / (time.perf_counter() - start), {r.item: r.answer for r in results.records}


def through_session(engine: LocalEngine, items: int) -> float:
    prompts = [item.prompt for item in load_suite("arithmetic").items[:items]]
    controls = think_controls(SETTINGS, "off")
    start = time.perf_counter()
    for prompt in prompts:
        new_session(engine, SETTINGS).ask(prompt, controls)
    return items / (time.perf_counter() - start)


def sandbox_overhead_ms(runs: int) -> tuple[float, float]:
    """Median ms per test through the sandbox, and for the same program under a bare python -I -S -c."""
    program = CODE + TESTS
    sandboxed, bare = [], []
    for _ in range(runs):
        start = time.perf_counter()
        assert python_tests(CODE, TESTS).passed
        sandboxed.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", program], check=True)
        bare.append(time.perf_counter() - start)
    return 1e3 * statistics.median(sandboxed), 1e3 * statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--tests", type=int, default=20)
    args = parser.parse_args()
    engine = LocalEngine(embedded_model_path(), n_ctx=2048)
    through_session(engine, 2)  # warm up the engine and the page cache
    ours, direct = [], []
    for _ in range(args.rounds):
        ours.append(through_eval(engine, args.items))
        direct.append(through_session(engine, args.items))
    o, d = statistics.median(ours), statistics.median(direct)
    ratio = o / d
    print(
        f"items/s  session directly {d:6.2f}   katpilot eval {o:6.2f}   ratio {ratio:.3f}  (target >= 0.95)  {'ok' if ratio >= 0.95 else 'MISSED'}"
    )
    sandboxed, bare = sandbox_overhead_ms(args.tests)
    overhead = sandboxed - bare
    print(
        f"per test  sandbox {sandboxed:6.1f} ms   bare python -I -S -c {bare:6.1f} ms   overhead {overhead:5.1f} ms  (target <= 50)  {'ok' if overhead <= 50 else 'MISSED'}"
    )
    engine.close()
    one, two, same = [], [], True
    for _ in range(args.rounds):
        rate, answers = with_jobs(1, args.items)
        one.append(rate)
        rate, again = with_jobs(2, args.items)
        two.append(rate)
        same = same and answers == again
    a, b = statistics.median(one), statistics.median(two)
    print(f"items/s  eval --jobs 1 {a:6.2f}   --jobs 2 {b:6.2f}   ratio {b / a:.2f}   same answers: {same}")


if __name__ == "__main__":
    main()
