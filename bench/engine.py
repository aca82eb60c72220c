"""katpilot's engine against raw llama-cpp-python, and prefix reuse between chat turns.

    python bench/engine.py [--rounds 5] [--tokens 128]

Targets (issue 3): tokens/s through katpilot's engine >= 0.97 of raw llama-cpp-python on the same
prompt and settings (alternating runs, same process); the second chat turn's time to first token
<= 0.5 of the first turn's (the first turn's prompt is not evaluated again).
"""

from __future__ import annotations

import argparse
import statistics
import time

import llama_cpp

from katpilot.chat_template import Message, render
from katpilot.engine.base import SamplingParams, StreamStats
from katpilot.engine.local import LocalEngine, default_threads
from katpilot.gguf_file import read_gguf
from katpilot.models import embedded_model_path
from katpilot.profiles import PLAIN
from katpilot.session import ChatSession, ThinkControls

QUESTION = "Write a detailed story about a lighthouse keeper and a storm."
N_CTX = 2048


def raw_tokens_per_s(llm: llama_cpp.Llama, prompt: str, n: int) -> float:
    """Stream with llama-cpp-python's own completion API; decode speed after the first token."""
    first = last = None
    count = 0
    for _chunk in llm.create_completion(prompt, max_tokens=n, temperature=0.0, repeat_penalty=1.0, stream=True):
        last = time.perf_counter()
        first = first or last
        count += 1
    return (count - 1) / (last - first)


def engine_tokens_per_s(engine: LocalEngine, prompt: str, n: int) -> float:
    first = last = None
    stats = StreamStats()
    for _piece in engine.stream(prompt, SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=n), stats=stats):
        last = time.perf_counter()
        first = first or last
    return (stats.generated_tokens - 1) / (last - first)


def second_turn_ratio(path: str) -> tuple[float, float]:
    """Time to first token of turn 1 (cold) and turn 2 (same chat) on a fresh engine."""
    engine = LocalEngine(path, n_ctx=N_CTX)
    chat = ChatSession(engine, PLAIN, "You are a helpful assistant.", SamplingParams(temperature=0.0, max_tokens=8))
    code = "\n".join(f"def helper_{i}(x):\n    return x * {i} + {i * 7}\n" for i in range(40))
    first = chat.ask(f"Here is my module:\n{code}\nWhat does helper_3 return for 2?", ThinkControls(think="off"))
    second = chat.ask("And helper_5?", ThinkControls(think="off"))
    engine.close()
    return first.stats.time_to_first_token_s or 0.0, second.stats.time_to_first_token_s or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    path = str(embedded_model_path())
    threads = default_threads()

    start = time.perf_counter()
    read_gguf(path)
    print(f"GGUF validation before load: {(time.perf_counter() - start) * 1e3:.1f} ms")

    raw = llama_cpp.Llama(path, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    engine = LocalEngine(path, n_ctx=N_CTX, n_threads=threads)
    info = engine.info
    prompt = render(info.chat_template, [Message("user", QUESTION)], info.bos_token, info.eos_token)
    raw_runs, ours = [], []
    for _ in range(args.rounds):  # alternate, so drift on a noisy machine hits both alike
        raw_runs.append(raw_tokens_per_s(raw, prompt, args.tokens))
        ours.append(engine_tokens_per_s(engine, prompt, args.tokens))
    r, o = statistics.median(raw_runs), statistics.median(ours)
    ratio = o / r
    print(
        f"tokens/s  raw llama-cpp-python {r:7.1f}   katpilot engine {o:7.1f}   ratio {ratio:.3f}  (target >= 0.97)  {'ok' if ratio >= 0.97 else 'MISSED'}"
    )

    first, second = second_turn_ratio(path)
    turn = second / first
    print(
        f"time to first token  turn 1 {first * 1e3:6.0f} ms   turn 2 {second * 1e3:6.0f} ms   ratio {turn:.3f}  (target <= 0.5)  {'ok' if turn <= 0.5 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
