"""Model-side jobs of the language server, run on its model thread: completions and questions.

Everything goes through a `ChatSession`: questions (actions, `katpilot.ask`) and chat-prompt
completions through `send`, so think controls, budgets and the gate apply as in every front end;
fill-in-the-middle completions through `complete`, the session's raw path (a FIM prompt is not a
chat). Completions are think-off, greedy, and cut at the first boundary (`completion.cut_completion`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import PurePath

from katpilot.config import Settings
from katpilot.engine.base import Engine, SamplingParams
from katpilot.errors import ContextOverflowError
from katpilot.gate import Segment, Text
from katpilot.index.languages import language_for, line_comment
from katpilot.models import new_session, sampling_params
from katpilot.session import Completed, Finished, Response, SessionEvent, ThinkControls
from katpilot.terms import CHARS_PER_TOKEN
from lsp.completion import (
    COMPLETION_SYSTEM,
    CursorContext,
    chat_question,
    clean_chat_answer,
    cut_completion,
    fim_prompt,
    split_around,
)

# Tokens kept free for the chat template and instructions around the code.
PROMPT_OVERHEAD_TOKENS = 160
THINK_OFF = ThinkControls(think="off")


def completion_sampling(settings: Settings, max_tokens: int) -> SamplingParams:
    """Greedy: completions should be the model's best guess, the same each time."""
    return replace(sampling_params(settings), temperature=0.0, max_tokens=max_tokens)


def language_name(path: str, language_id: str) -> str:
    """The language for prompts: the index's name for the file, else the editor's language id."""
    return language_for(path) or language_id


def cursor_context(
    engine: Engine, text: str, offset: int, path: str, language: str, repo_context: list[str], max_tokens: int
) -> CursorContext:
    """The code around the cursor, trimmed until the whole prompt fits the context window."""
    room = engine.info.n_ctx - max_tokens - PROMPT_OVERHEAD_TOKENS - 8 * len(repo_context)
    max_chars = max(64, room * CHARS_PER_TOKEN)
    while True:
        prefix, suffix = split_around(text, offset, max_chars)
        ctx = CursorContext(prefix, suffix, language, path, repo_context)
        if (
            engine.count_tokens(prompt_text(engine, ctx)) + max_tokens + PROMPT_OVERHEAD_TOKENS // 2
            <= engine.info.n_ctx
        ):
            return ctx
        if max_chars <= 64:
            raise ContextOverflowError(
                "the code around the cursor does not fit the context window",
                "raise n_ctx or lower completion_max_tokens",
            )
        max_chars //= 2


def prompt_text(engine: Engine, ctx: CursorContext) -> str:
    """What the model reads, for sizing: the FIM prompt, or the chat question."""
    if engine.info.fim_tokens:
        return fim_prompt(ctx, engine.info.fim_tokens, line_comment(PurePath(ctx.path)))
    return chat_question(ctx)


def complete(
    engine: Engine, settings: Settings, ctx: CursorContext, params: SamplingParams, cancel: threading.Event
) -> str:
    """The text to insert at the cursor ("" when the model offers nothing)."""
    fim_tokens = engine.info.fim_tokens
    if fim_tokens:
        return _complete_fim(engine, settings, ctx, fim_tokens, params, cancel)
    return _complete_chat(engine, settings, ctx, params, cancel)


def _complete_fim(
    engine: Engine,
    settings: Settings,
    ctx: CursorContext,
    fim_tokens: tuple[str, str, str],
    params: SamplingParams,
    cancel: threading.Event,
) -> str:
    prompt = fim_prompt(ctx, fim_tokens, line_comment(PurePath(ctx.path)))
    session = new_session(engine, settings, sampling=params)
    for item in session.complete(prompt, cancel=cancel, stop=lambda text: cut_completion(text, ctx)[1]):
        if isinstance(item, Completed):
            return cut_completion(item.text, ctx)[0]
    raise AssertionError("complete() always ends with Completed")


def _complete_chat(
    engine: Engine, settings: Settings, ctx: CursorContext, params: SamplingParams, cancel: threading.Event
) -> str:
    session = new_session(engine, settings, system_prompt=COMPLETION_SYSTEM, sampling=params)
    answer = ""
    events = session.send(chat_question(ctx), THINK_OFF, cancel)
    try:
        for event in events:
            if isinstance(event, Text) and event.segment is Segment.ANSWER:
                answer += event.text
                if cut_completion(clean_chat_answer(answer, ctx), ctx)[1]:
                    break
    finally:
        events.close()
    return cut_completion(clean_chat_answer(answer, ctx), ctx)[0]


def ask(
    engine: Engine,
    settings: Settings,
    question: str,
    controls: ThinkControls,
    cancel: threading.Event,
    on_event: Callable[[SessionEvent], None],
) -> Response:
    """One question through a fresh session; every event is shown to `on_event` (progress)."""
    session = new_session(engine, settings)
    for event in session.send(question, controls, cancel):
        on_event(event)
        if isinstance(event, Finished):
            return event.response
    raise AssertionError("send() always ends with Finished")
