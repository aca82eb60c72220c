"""The engine interface: tokens in, text pieces out. Local llama.cpp and remote servers implement it.

An engine knows nothing of AutoThink: the session and the gate put the format on top. What every
engine must offer is what the session needs: render nothing, count tokens, stream a raw prompt one
token at a time with cancellation, and score continuations at a decision point (or say it cannot).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

FinishReason = Literal["stop", "length", "context", "cancelled"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one generation; temperature 0 is greedy."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    max_tokens: int = 1024


@dataclass(frozen=True)
class ModelInfo:
    """What the front ends and the session need to know about the loaded model."""

    name: str
    path: str | None
    architecture: str
    chat_template: str
    bos_token: str
    eos_token: str
    n_ctx: int  # the context window in use
    tags_in_vocab: frozenset[str] = frozenset()
    fim_tokens: tuple[str, str, str] | None = None  # (prefix, suffix, middle): the model can fill in


@dataclass
class StreamStats:
    """Filled in by an engine while it streams; read by the session afterwards."""

    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens served from the KV cache of an earlier call
    generated_tokens: int = 0
    finish_reason: FinishReason | None = None
    prompt_eval_s: float = 0.0
    token_ids: list[int] = field(default_factory=list)  # the generated ids, where the engine knows them
    end_token: int | None = None  # the end-of-generation token that stopped it ("stop"), where known
    extra: dict[str, object] = field(default_factory=dict)


class Engine(ABC):
    """One loaded model. Calls are serialised by the engine: one generation at a time."""

    info: ModelInfo

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the prompt text takes (special tokens parsed, no BOS added)."""

    @abstractmethod
    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Generator[str, None, None]:
        """Generate from a raw prompt, yielding the text of each token as it is sampled.

        Stops at end of sequence ("stop"), `params.max_tokens` ("length"), a full context window
        ("context") or when `cancel` is set ("cancelled", checked before every token). What was
        generated before a stop is never lost: it has already been yielded.

        A generator, not just an iterator: a caller that stops reading early calls `.close()`, so
        the engine's `finally` runs at once (the finish reason is set, the model or the HTTP
        connection is released) rather than whenever the garbage collector gets to it.
        """

    @abstractmethod
    def continuation_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float] | None:
        """log P(continuation | prompt) for each continuation, or None if the engine cannot tell."""

    def continuation_top_logprobs(
        self, prompt: str, continuation: str, k: int, temperature: float = 1.0
    ) -> np.ndarray | None:
        """The k largest log-probabilities (descending) of the next-token distribution (softmax of the
        logits / `temperature`) at each token of `continuation` after `prompt`, shape (its tokens, k);
        None if the engine cannot tell (a remote server reports no full distributions).

        What a cached distillation teacher writes: ULD needs the distribution's shape, not its ids.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional: an engine that holds nothing need not override it
        """Release the model."""
