"""Tokens/s of the embedded model streamed through the chat app against the session directly.

    python bench/chat.py [--rounds N] [--tokens N]

Both sides use the thread count the app picks (one core left to the UI, `chat_threads`). The app runs headless (Textual's run_test) with its real widgets, timer-driven rendering and
history writes; the same question, greedy, think off, alternating with a direct session run so both
see the same machine load. Also prints the time from launch to a ready prompt (model loaded).
Target (issue 7): ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from katpilot.chat.app import ChatApp, chat_threads
from katpilot.config import load_settings
from katpilot.models import load_engine, new_session, think_controls

QUESTION = "Write a long story about a dragon who learns to program."


def direct(settings) -> float:
    engine = load_engine(chat_threads(settings))  # the same thread count the app uses
    try:
        response = new_session(engine, settings).ask(QUESTION, think_controls(settings))
    finally:
        engine.close()
    return response.stats.tokens_per_s  # (tokens - 1) / (last token - first token), as the app's figure


async def through_app(settings, scratch: Path) -> tuple[float, float, float]:
    """(tokens/s as the screen received them, seconds to a ready prompt, tokens/s of generation)."""
    started = time.perf_counter()
    app = ChatApp(settings, workspace=scratch, history_path=scratch / "history.sqlite")
    async with app.run_test(size=(120, 40)) as pilot:
        while app.session is None:
            await pilot.pause(0.01)
        ready = time.perf_counter() - started
        app.ask(QUESTION)
        first_seen = None
        while not app.responses:
            # Plain sleeps, not pilot.pause(): the pilot forces a screen refresh on every call.
            if first_seen is None and app._current is not None and app._current.ready and app._current.answer.source:
                first_seen = time.perf_counter()
            await asyncio.sleep(0.01)
        done = time.perf_counter()
        tokens = app.responses[-1].stats.completion_tokens
        # Tokens over the time the screen took to receive them (first drained piece to the last).
        rate = (tokens - 1) / (done - first_seen) if first_seen and done > first_seen else float("nan")
        generated = app.responses[-1].stats.tokens_per_s  # the model's own pace while the app ran
    return rate, ready, generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, help="llama.cpp threads for both sides (default: the config's)")
    parser.add_argument("--interval", type=float, help="override the app's render interval (seconds)")
    args = parser.parse_args()
    if args.interval:
        import katpilot.chat.app as chat_app

        chat_app.DRAIN_INTERVAL_S = args.interval
    flags = {"think": "off", "temperature": 0.0, "max_tokens": args.tokens}
    if args.threads:
        flags["n_threads"] = args.threads
    settings = load_settings(flags).settings
    direct_rates, app_rates, ready_times, generated_rates = [], [], [], []
    direct(settings)  # warm-up: the first load of a process pays for page faults and llama.cpp setup
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            direct_rates.append(direct(settings))
            rate, ready, generated = asyncio.run(through_app(settings, Path(scratch)))
            app_rates.append(rate)
            ready_times.append(ready)
            generated_rates.append(generated)
            print(
                f"  round {round_ + 1}: session {direct_rates[-1]:.1f} tok/s, app {app_rates[-1]:.1f} tok/s on screen "
                f"({generated:.1f} generated), ready after {ready:.2f} s",
                flush=True,
            )
    d, a = statistics.median(direct_rates), statistics.median(app_rates)
    print(f"tokens/s   session directly {d:.1f}   through the chat app {a:.1f}   ratio {a / d:.3f}  (target >= 0.95)")
    print(f"launch to a ready prompt (headless, model loaded): {statistics.median(ready_times):.2f} s")


if __name__ == "__main__":
    main()
