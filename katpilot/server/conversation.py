"""An OpenAI request -> the parts of a ChatSession: system prompt, history, last user turn, sampling.

The mapping: leading system (or developer) messages become the session's system prompt (the
server's configured one when there are none); every later message up to the last becomes the
history, rendered by the model's own chat template; the last message, which must be the user's,
is what `send()` answers. Sampling starts from the server's settings and takes the request's
values over them. Checks that need the model (the context window) are made here, so a bad value is
a 400 naming the field before the request waits in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from katpilot.chat_template import Message
from katpilot.engine.base import SamplingParams
from katpilot.server.api_errors import ApiError
from katpilot.server.schemas import (
    MAX_STOP_SEQUENCES,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
)

SYSTEM_ROLES = ("system", "developer")
# llama.cpp's "random seed" value is 2**32 - 1: request seeds are reduced below it.
SEED_MODULUS = 0xFFFFFFFF


@dataclass(frozen=True)
class Conversation:
    """What one request asks of a session."""

    system: str | None  # None: keep the server's configured system prompt
    history: list[Message]
    user: str


def chat_conversation(body: ChatCompletionRequest) -> Conversation:
    messages = list(body.messages)
    system_parts: list[str] = []
    while messages and messages[0].role in SYSTEM_ROLES:
        system_parts.append(_text(messages.pop(0), len(system_parts)))
    first = len(system_parts)
    if not messages or messages[-1].role != "user":
        last = "none" if not messages else messages[-1].role
        raise ApiError(
            400,
            f"the last message must be the user's, not {last}",
            'end messages with a {"role": "user"} message',
            param=f"messages[{len(body.messages) - 1}].role",
            code="invalid_value",
        )
    history = []
    for offset, message in enumerate(messages[:-1]):
        index = first + offset
        role = message.role
        if role == "tool" or role == "function":  # `==`, not `in`: mypy narrows the Literal on `==`
            raise ApiError(
                400,
                f"messages[{index}] has role {role}: tool calls are not served",
                "send the tool's result as a user message",
                param=f"messages[{index}].role",
                code="invalid_value",
            )
        history.append(Message("system" if role == "system" or role == "developer" else role, _text(message, index)))
    user = _text(messages[-1], len(body.messages) - 1)
    return Conversation("\n\n".join(system_parts) if system_parts else None, history, user)


def completion_conversation(body: CompletionRequest) -> Conversation:
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ApiError(
                400,
                f"prompt is a list of {len(prompt)} prompts: one request serves one prompt",
                "send one prompt per request",
                param="prompt",
                code="invalid_value",
            )
        prompt = prompt[0]
    for name, bad in (
        ("echo", bool(body.echo)),
        ("suffix", body.suffix is not None),
        ("logprobs", body.logprobs is not None),
    ):
        if bad:
            raise ApiError(
                400, f"{name} is not supported by katpilot", f"leave {name} out", param=name, code="unsupported"
            )
    return Conversation(None, [], _clean(prompt))


def check_chat_extras(body: ChatCompletionRequest) -> None:
    if body.logprobs:
        raise ApiError(
            400, "logprobs are not supported by katpilot", "leave logprobs out", param="logprobs", code="unsupported"
        )


def _text(message: ChatMessage, index: int) -> str:
    """A message's text: a string, or the text parts of a list joined by newlines."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return _clean(content)
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise ApiError(
                400,
                f"messages[{index}].content[{j}] is a {part.type!r} part: only text parts are served",
                "send text only",
                param=f"messages[{index}].content[{j}]",
                code="unsupported",
            )
        texts.append(_clean(part.text))
    return "\n".join(texts)


def _clean(text: str) -> str:
    """JSON can carry lone UTF-16 surrogates that UTF-8 cannot: replace them, as a tokenizer would."""
    return text.encode("utf-8", "replace").decode("utf-8")


def sampling_for(body: SamplingFields, default: SamplingParams, n_ctx: int, max_tokens: int | None) -> SamplingParams:
    """The server's sampling settings with the request's values over them."""
    if max_tokens is not None and max_tokens > n_ctx:
        name = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        raise ApiError(
            400,
            f"{name} = {max_tokens} is more than the model's context window of {n_ctx} tokens",
            f"ask for at most {n_ctx} tokens, or leave {name} out",
            param=name,
            code="invalid_value",
        )
    given: dict[str, Any] = {  # each value has its field's type; only the dict mixes them
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
        "seed": None if body.seed is None else body.seed % SEED_MODULUS,
        "max_tokens": max_tokens,
    }
    return replace(default, **{k: v for k, v in given.items() if v is not None})


def stop_sequences(body: SamplingFields) -> list[str]:
    stop = body.stop
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ApiError(
            400,
            f"stop has {len(stops)} sequences, at most {MAX_STOP_SEQUENCES} are allowed",
            f"send at most {MAX_STOP_SEQUENCES}",
            param="stop",
            code="invalid_value",
        )
    return [_clean(s) for s in stops if s]


def requested_max_tokens(body: ChatCompletionRequest | CompletionRequest) -> int | None:
    return getattr(body, "max_completion_tokens", None) or body.max_tokens
