"""The wire format: OpenAI request and response bodies, plus katpilot's own fields.

Requests accept unknown fields and ignore them (clients send `user`, `logit_bias`, `tools`, ...
that a local model has no use for); known fields are typed and bounded here, so FastAPI rejects a
bad value before any model work and the error names the field. Checks that need the loaded model
(max_tokens against the context window, roles, content parts) live in `conversation.py`.

Responses are built from these models too, so the OpenAPI document describes exactly what is sent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from katpilot.gate import DecidedBy
from katpilot.terms import Mode, ThinkMode

# Every value the openai SDK's ReasoningEffort type allows; see controls.EFFORT.
EffortField = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
MAX_STOP_SEQUENCES = 4  # as OpenAI


class _Request(BaseModel):
    # strict: JSON types as OpenAI documents them (no "5" for 5, no 0 for false)
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Sparse(_Body):
    """Leaves out fields that are None: stream chunks stay small (`"delta": {"content": "x"}`)."""

    @model_serializer(mode="wrap")
    # No return annotation on purpose: pydantic would publish it as the serialised schema of every
    # subclass, in place of the fields themselves.
    def _drop_none(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]  # pydantic publishes a return annotation as the schema
        return {k: v for k, v in handler(self).items() if v is not None}


# --- requests ----------------------------------------------------------------------------------


class ContentPart(_Request):
    """One part of a message's content; only `text` parts are served."""

    type: str
    text: str | None = None


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class ChatTemplateKwargs(_Request):
    """vLLM / SGLang / llama.cpp's template switch; only `enable_thinking` is read."""

    enable_thinking: bool | None = None


class ThinkFields(_Request):
    """The think decision under the caller's control; precedence in `controls.py`."""

    think: ThinkMode | None = Field(None, description="katpilot: auto (the model judges), on or off.")
    think_budget: int | None = Field(None, ge=1, description="katpilot: close the think block after N tokens.")
    think_threshold: float | None = Field(
        None, ge=0, le=1, description="katpilot, think=auto: think when p(on) >= this."
    )
    reasoning_effort: EffortField | None = Field(
        None, description="OpenAI: none/minimal -> off, low -> auto with a small budget, medium -> auto, high -> on."
    )
    chat_template_kwargs: ChatTemplateKwargs | None = Field(
        None, description="vLLM style: {enable_thinking: true|false} -> think on|off."
    )
    thinking_token_budget: int | None = Field(None, ge=1, description="vLLM: the think budget in tokens.")


class SamplingFields(_Request):
    model: str | None = Field(None, description="The served model's id (see /v1/models); omit for the served model.")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate at most, judge and thinking included.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=10)
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted and ignored.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted and ignored.")
    seed: int | None = None
    stop: str | list[str] | None = Field(None, description="Up to 4 sequences that end the answer (not the thinking).")
    n: int | None = Field(None, ge=1, le=1, description="Only 1 choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None


class ChatCompletionRequest(SamplingFields, ThinkFields):
    messages: list[ChatMessage] = Field(min_length=1, description="The last message must be the user's.")
    max_completion_tokens: int | None = Field(
        None, ge=1, description="Newer name for max_tokens; wins if both are set."
    )
    logprobs: bool | None = Field(None, description="Not supported: only false.")


class CompletionRequest(SamplingFields, ThinkFields):
    prompt: str | list[str] = Field(description="Sent as one user message, with the model's chat template.")
    echo: bool | None = Field(None, description="Not supported: only false.")
    suffix: str | None = Field(None, description="Not supported (no fill-in-the-middle).")
    best_of: int | None = Field(None, ge=1, le=1)
    logprobs: int | None = Field(None, description="Not supported: only null.")


# --- responses ---------------------------------------------------------------------------------


class TokenCounts(_Body):
    judge: int
    think: int
    answer: int
    other: int


class Controls(_Body):
    """The effective think controls and which request field (or the server) set each one."""

    think: ThinkMode
    think_budget: int | None
    think_threshold: float
    set_by: dict[str, str]


class KatpilotInfo(_Body):
    """What AutoThink did: the decision, the judge's text, and tokens per segment."""

    mode: Mode
    decided_by: DecidedBy  # "none": nobody chose the mode (a plain model has no decision point)
    p_on: float | None
    judge: str
    profile: str
    controls: Controls
    tokens: TokenCounts
    finish_reason: str
    notices: list[str]
    tokens_per_s: float
    time_to_first_token_s: float | None


class StreamNote(_Sparse):
    """katpilot's note on a stream chunk: judge text as it streams, the decision, a notice."""

    judge: str | None = None
    mode: Mode | None = None
    decided_by: DecidedBy | None = None
    p_on: float | None = None
    notice: str | None = None


class CompletionTokensDetails(_Body):
    reasoning_tokens: int


class Usage(_Body):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails


class AssistantMessage(_Body):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None


class ChatChoice(_Body):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(_Body):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage
    katpilot: KatpilotInfo


class Delta(_Sparse):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(_Body):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(_Sparse):
    """One SSE event; the last one with choices also carries the full `katpilot` summary."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    katpilot: KatpilotInfo | StreamNote | None = None


class TextChoice(_Body):
    index: int = 0
    text: str
    reasoning_content: str | None = None
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class Completion(_Sparse):
    """A text completion, or (object text_completion too, as OpenAI) one chunk of a stream."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[TextChoice]
    usage: Usage | None = None
    katpilot: KatpilotInfo | StreamNote | None = None


class ModelCard(_Body):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "katpilot"


class ModelList(_Body):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class QueueState(_Body):
    limit: int
    in_flight: int


class Health(_Body):
    status: Literal["ok"] = "ok"
    model: str
    profile: str
    queue: QueueState
    finished: dict[str, int] = Field(description="Generations by how they ended: stop, length, context, cancelled.")
    rejected: int = Field(description="Requests answered 429 because the queue was full.")


class ErrorDetail(_Body):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(_Body):
    error: ErrorDetail
