"""Shared test fakes: an engine that replays a script, and the in-process server around it.

The embedded SmolLM2 never writes AutoThink tags and has no fill-in-the-middle tokens, so the paths
that react to them (the session's decision point, the server's KAT output, the LSP's FIM
completion) are driven by `ScriptedEngine`, which replays token pieces on purpose and scores
decisions with fixed log-probabilities. Test modules import from here, never from each other.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from katpilot.engine.base import Engine, ModelInfo, SamplingParams, StreamStats

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A chat request for the in-process server.
QUESTION = {"messages": [{"role": "user", "content": "What is 40+2?"}]}


class ScriptedEngine(Engine):
    """Replays token pieces across calls; scores decisions with fixed log-probabilities (or none).

    Each piece counts as one token. A stream ends "stop" when the script runs out, "length" when
    `max_tokens` comes first. Every prompt streamed (`prompts`) and scored (`scored`) is kept.
    """

    def __init__(
        self,
        pieces: list[str],
        logprobs: tuple[float, float] | None = (-1.0, -2.0),
        fim_tokens: tuple[str, str, str] | None = None,
    ) -> None:
        self.pieces = list(pieces)
        self.logprobs = logprobs
        self.prompts: list[str] = []
        self.scored: list[str] = []
        self.info = ModelInfo("scripted", None, "test", CHATML, "", "<|im_end|>", 4096, fim_tokens=fim_tokens)

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        stats = stats if stats is not None else StreamStats()
        self.prompts.append(prompt)
        while self.pieces and stats.generated_tokens < params.max_tokens:
            stats.generated_tokens += 1
            yield self.pieces.pop(0)
        stats.finish_reason = "stop" if not self.pieces else "length"

    def continuation_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float] | None:
        self.scored.append(prompt)
        return None if self.logprobs is None else [self.logprobs[0]] + [self.logprobs[1]] * (len(continuations) - 1)


def client_for(engine: Engine) -> TestClient:
    """The real app (create_app) on `engine` with the kat profile, run by Starlette's TestClient."""
    from fastapi.testclient import TestClient

    from katpilot.config import load_settings
    from katpilot.server.app import create_app

    settings = load_settings({"profile": "kat"}).settings
    return TestClient(create_app(engine, settings))


def sse_chunks(text: str) -> list[dict[str, Any]]:
    """The JSON chunks of a server-sent-events reply, checking that it ends with [DONE]."""
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]
