"""Render a conversation with the model's own chat template (the Jinja2 text in its GGUF).

Rendered the way Hugging Face renders it (sandboxed, trim_blocks, lstrip_blocks), so a prompt
built here is the prompt the model was trained on.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from katpilot.errors import ModelFileError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
    return env.from_string(template)


def render(template: str, messages: list[Message], bos_token: str = "", eos_token: str = "") -> str:
    """The prompt text for `messages`, ending with the start of the assistant's turn."""
    try:
        return _compile(template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except jinja2.TemplateError as exc:
        raise ModelFileError(
            f"the model's chat template failed: {exc}",
            "use a model whose GGUF carries a working tokenizer.chat_template",
        ) from exc
