"""Mode-gate throughput, and its cost per token next to the embedded model's time per token.

    python bench/gate.py [--mb 20]

Targets (issue 3): >= 50 MB/s on a long synthetic stream in 4 KiB chunks; per-token cost in
token-sized chunks <= 0.01 of the model's time per token, both measured in this run.
"""

from __future__ import annotations

import argparse
import random
import time

from katpilot.engine.base import SamplingParams, StreamStats
from katpilot.gate import ModeGate

CODE = (
    "def merge(a: list[int], b: list[int]) -> list[int]:\n"
    "    out = []\n    while a and b:\n        out.append(a.pop(0) if a[0] <= b[0] else b.pop(0))\n"
    "    return out + a + b  # if x < y and y > z: <not a tag>\n"
)
RESPONSES = [
    "<judge>\nThis needs a few steps.\n</judge>\n<think_on>\n<think>\nFirst, compare heads.\n"
    + CODE
    + "</think>\n<answer>\n"
    + CODE
    + "</answer>\n",
    "<judge>\nSimple lookup.\n</judge>\n<think_off>\n<answer>\nUse `sorted(a + b)`.\n" + CODE + "</answer>\n",
]


def synthetic_stream(n_bytes: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    parts, size = [], 0
    while size < n_bytes:
        part = rng.choice(RESPONSES)
        parts.append(part)
        size += len(part)
    return "".join(parts)


def feed_all(text: str, chunk: int) -> float:
    """Seconds to parse `text` fed in `chunk`-character pieces (one gate per response-sized run)."""
    gate = ModeGate()
    start = time.perf_counter()
    for i in range(0, len(text), chunk):
        gate.feed(text[i : i + chunk])
    gate.close()
    return time.perf_counter() - start


def model_seconds_per_token(n_tokens: int = 64) -> float:
    from katpilot.chat_template import Message, render
    from katpilot.engine.local import LocalEngine
    from katpilot.models import embedded_model_path

    engine = LocalEngine(embedded_model_path(), n_ctx=2048)
    info = engine.info
    prompt = render(
        info.chat_template, [Message("user", "Write a long story about a lighthouse.")], info.bos_token, info.eos_token
    )
    stats = StreamStats()
    start = time.perf_counter()
    for _ in engine.stream(prompt, SamplingParams(temperature=0.0, max_tokens=n_tokens), stats=stats):
        pass
    elapsed = time.perf_counter() - start - stats.prompt_eval_s
    engine.close()
    return elapsed / max(1, stats.generated_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="size of the synthetic stream")
    args = parser.parse_args()
    text = synthetic_stream(int(args.mb * 1e6))
    n_bytes = len(text.encode("utf-8"))

    best = min(feed_all(text, 4096) for _ in range(3))
    mb_s = n_bytes / best / 1e6
    print(
        f"4 KiB chunks : {mb_s:8.1f} MB/s over {n_bytes / 1e6:.1f} MB  (target >= 50)  {'ok' if mb_s >= 50 else 'MISSED'}"
    )

    token_text = text[:2_000_000]
    per_char = min(feed_all(token_text, 4) for _ in range(3)) / len(token_text)
    per_token = per_char * 4  # ~4 characters a token
    model = model_seconds_per_token()
    ratio = per_token / model
    print(
        f"token chunks : {per_token * 1e6:8.2f} us/token; model {model * 1e3:.2f} ms/token; ratio {ratio:.5f}  (target <= 0.01)  {'ok' if ratio <= 0.01 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
