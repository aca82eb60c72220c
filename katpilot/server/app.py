"""The FastAPI application: OpenAI routes over one engine, one generation at a time.

A request becomes a fresh ChatSession (models.new_session, so the profile and sampling defaults are
the CLI's), waits its turn in the GenerationQueue, and runs in the queue's worker thread. The
response is built from the session's events by Transcript and a Shape: a JSON document, or an SSE
stream whose headers are sent once the first event exists, so an error at prompt time (context
overflow, a template that refuses the messages) is still a proper 4xx rather than a broken stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from katpilot import __version__
from katpilot.config import SERVE_QUEUE_DEFAULT, Settings
from katpilot.engine.base import Engine, SamplingParams
from katpilot.errors import KatpilotError
from katpilot.models import EMBEDDED_NAME, load_engine, new_session, profile_for, sampling_params, think_controls
from katpilot.server import api_errors, sse
from katpilot.server.api_errors import ApiError
from katpilot.server.controls import resolve_controls
from katpilot.server.conversation import (
    Conversation,
    chat_conversation,
    check_chat_extras,
    completion_conversation,
    requested_max_tokens,
    sampling_for,
    stop_sequences,
)
from katpilot.server.guard import Guard, bearer
from katpilot.server.queue import Busy, GenerationQueue, Ticket
from katpilot.server.responses import ChatShape, CompletionShape, Reply, Shape, StreamEncoder, katpilot_info, usage
from katpilot.server.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Controls,
    ErrorBody,
    Health,
    ModelCard,
    ModelList,
    QueueState,
)
from katpilot.server.transcript import Piece, Transcript, merge_pieces
from katpilot.session import ChatSession, Finished, SessionEvent, ThinkControls

log = logging.getLogger("katpilot.server")
T = TypeVar("T")

# A whole conversation of a 128k-token context is well under 1 MiB of text; 16 MiB stops runaway
# uploads without getting near a real request.
MAX_BODY_BYTES = 16 * 2**20
CLIENT_GONE = 499  # nginx's "client closed request": only ever seen in the access log
# What the model writes is sent at most every 20 ms, a delay no reader notices. At ~150 tokens/s
# that is one HTTP write per 3 tokens instead of one per token: on a machine whose cores are all
# decoding, the event loop's work per write is taken from the model (bench/server.py).
BATCH_INTERVAL_S = 0.02

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A bad field or value; `param` names it."},
    401: {"model": ErrorBody, "description": "Missing or wrong API key (when the server has one)."},
    404: {"model": ErrorBody, "description": "The model is not served here."},
    413: {"model": ErrorBody, "description": "The request body is larger than 16 MiB."},
    429: {"model": ErrorBody, "description": "The queue is full; see the Retry-After header."},
    500: {"model": ErrorBody, "description": "The engine failed."},
    503: {"model": ErrorBody, "description": "The server is shutting down."},
}
_SSE = {
    "text/event-stream": {"schema": {"type": "string", "description": "`data: {chunk}` events, then `data: [DONE]`."}}
}


@dataclass
class ServerState:
    """Everything the routes share: the engine, its defaults, the queue, counters."""

    engine: Engine
    settings: Settings
    model_id: str
    profile: str
    queue: GenerationQueue
    names: frozenset[str] = frozenset()
    finished: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    # `serve --models`: every model id this server answers for -> its --model value; one is loaded at
    # a time (`engine`, `model_id`) and a request naming another swaps it in, on the worker thread.
    choices: dict[str, str] = field(default_factory=dict)

    def model_for(self, requested: str | None) -> str:
        """The model id a request is answered by (the loaded one when it names none)."""
        if requested is None or requested in self.names:
            return self.model_id
        if requested in self.choices:
            return requested
        served = ", ".join(repr(c) for c in self.choices) if self.choices else repr(self.model_id)
        raise ApiError(
            404,
            f"model {requested!r} is not served here; this server serves {served}",
            f"set model to {served if not self.choices else 'one of them'}, or leave it out",
            param="model",
            code="model_not_found",
        )

    def check_model(self, requested: str | None) -> None:
        self.model_for(requested)

    def switch_to(self, model_id: str) -> None:
        """Load `model_id` in place of the loaded model (worker thread, holding the turn).

        The new model is loaded before the old one is closed, so a model that fails to load leaves
        the server answering with the one it had.
        """
        if model_id == self.model_id:
            return
        settings = replace(self.settings, model=self.choices[model_id])
        engine = load_engine(settings)
        try:
            profile = profile_for(engine, settings).name
        except Exception:
            engine.close()
            raise
        old = self.engine
        self.engine, self.model_id, self.profile = engine, model_id, profile
        self.names = served_names(settings, engine)[1] | {model_id}
        old.close()
        log.info("loaded %s in place of the previous model", model_id)

    def session(self, conversation: Conversation, sampling: SamplingParams) -> ChatSession:
        """A fresh session holding the request's system message (else the configured one) and turns."""
        return new_session(
            self.engine,
            self.settings,
            system_prompt=conversation.system,
            history=conversation.history,
            sampling=sampling,
        )

    def generate(
        self, session: ChatSession, user: str, controls: ThinkControls, cancel: threading.Event
    ) -> Iterator[SessionEvent]:
        """The worker thread's job: the session's events, counting how each generation ended."""
        for event in session.send(user, controls, cancel=cancel):
            if isinstance(event, Finished):
                self.finished[event.response.stats.finish_reason] += 1
            yield event


def served_names(settings: Settings, engine: Engine) -> tuple[str, frozenset[str]]:
    """The model id /v1/models lists, and every name a request may use for it."""
    spec = settings.model
    if spec is None or spec == EMBEDDED_NAME:
        model_id = EMBEDDED_NAME
    elif spec in settings.models or not Path(spec).expanduser().exists():
        model_id = spec  # an alias, or a name `katpilot models` lists ("qwen2.5-coder:1.5b")
    else:
        model_id = Path(spec).stem
    names = {model_id, engine.info.name}
    if spec:
        names.add(spec)
    if engine.info.path:
        names |= {Path(engine.info.path).name, Path(engine.info.path).stem}
    return model_id, frozenset(n for n in names if n)


def create_app(
    engine: Engine, settings: Settings, *, api_key: str | None = None, queue_limit: int = SERVE_QUEUE_DEFAULT
) -> FastAPI:
    """The OpenAI-compatible API over `engine`; `settings` give the defaults a request can override."""
    model_id, names = served_names(settings, engine)
    profile = profile_for(engine, settings).name  # a bad --profile fails here, before serving
    state = ServerState(engine, settings, model_id, profile, GenerationQueue(queue_limit), names)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.queue.close()

    app = FastAPI(
        title="katpilot",
        version=__version__,
        description="OpenAI-compatible API over a local AutoThink model. See docs/server.md.",
        lifespan=lifespan,
    )
    app.state.katpilot = state
    api_errors.install(app)
    _strip_validation_responses(app)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=MAX_BODY_BYTES)
    app.include_router(_health_router(state))
    app.include_router(_v1_router(state), dependencies=[Depends(bearer)] if api_key else [])  # documents the key
    return app


def _health_router(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=Health, summary="Liveness, queue state and counters")
    async def health() -> Health:
        return Health(
            model=state.model_id,
            profile=state.profile,
            queue=QueueState(limit=state.queue.limit, in_flight=state.queue.in_flight),
            finished=dict(state.finished),
            rejected=state.rejected,
        )

    return router


def _v1_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/v1", responses={401: _ERRORS[401]})

    @router.get("/models", response_model=ModelList, summary="The served models")
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=m, created=0) for m in state.choices or [state.model_id]])

    @router.get("/models/{model:path}", response_model=ModelCard, responses={404: _ERRORS[404]}, summary="One model")
    async def get_model(model: str) -> ModelCard:
        return ModelCard(id=state.model_for(model), created=0)

    @router.post(
        "/chat/completions",
        response_model=ChatCompletion,
        responses={**_ERRORS, 200: {"content": _SSE}},
        summary="Chat completion, or an SSE stream of chunks with stream=true",
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        state.check_model(body.model)
        check_chat_extras(body)
        return await _respond(state, request, body, chat_conversation(body), ChatShape())

    @router.post(
        "/completions",
        response_model=Completion,
        responses={**_ERRORS, 200: {"content": _SSE}},
        summary="Text completion: the prompt is sent as one user message",
    )
    async def completions(body: CompletionRequest, request: Request) -> Response:
        state.check_model(body.model)
        return await _respond(state, request, body, completion_conversation(body), CompletionShape())

    return router


async def _respond(
    state: ServerState,
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    conversation: Conversation,
    shape: Shape,
) -> Response:
    """Everything both endpoints share: checked fields -> a session -> a turn in the queue."""
    settings = state.settings
    sampling = sampling_for(body, sampling_params(settings), state.engine.info.n_ctx, requested_max_tokens(body))
    stops = stop_sequences(body)
    controls, set_by = resolve_controls(body, think_controls(settings))
    shown = Controls(
        think=controls.think, think_budget=controls.budget, think_threshold=controls.threshold, set_by=set_by
    )
    model_id = state.model_for(body.model)
    ticket = _admit(state)  # after every check: a bad request never takes a slot
    cancel = threading.Event()

    def work() -> Iterator[SessionEvent]:
        state.switch_to(model_id)  # holding the turn: no other generation runs during a swap
        return state.generate(state.session(conversation, sampling), conversation.user, controls, cancel)

    job = _RequestJob(state.queue.run(ticket, work, cancel, BATCH_INTERVAL_S), ticket, cancel, Transcript(stops), shown)
    reply = Reply.new(shape.prefix, model_id)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream_reply(state, request, job, shape, reply, include_usage)
    return await _json_reply(request, job, shape, reply)


@dataclass
class _RequestJob:
    """One admitted request's generation in the queue, as the reply functions need it.

    Not the session's per-response run: this is the HTTP side (queue ticket, cancel, transcript).
    """

    batches: AsyncGenerator[list[SessionEvent], None]
    ticket: Ticket
    cancel: threading.Event
    transcript: Transcript
    controls: Controls


async def _json_reply(request: Request, job: _RequestJob, shape: Shape, reply: Reply) -> Response:
    if await _unless_disconnected(request, _collect(job), job.cancel) is None:
        return Response(status_code=CLIENT_GONE)
    response = job.transcript.response
    assert response is not None
    document = shape.document(reply, job.transcript, katpilot_info(response, job.controls), usage(response))
    return JSONResponse(document.model_dump(mode="json"))


async def _stream_reply(
    state: ServerState, request: Request, job: _RequestJob, shape: Shape, reply: Reply, include_usage: bool
) -> Response:
    """An SSE stream, started once the first events exist (so prompt-time errors keep their status)."""
    first = await _unless_disconnected(request, _first(job.batches), job.cancel)
    if first is None:
        state.queue.abandon(job.ticket)
        return Response(status_code=CLIENT_GONE)

    def on_close() -> None:
        job.cancel.set()
        state.queue.abandon(job.ticket)

    return sse.EventStream(_stream(job, shape, reply, first, include_usage), on_close)


def _admit(state: ServerState) -> Ticket:
    try:
        return state.queue.admit()
    except Busy as busy:
        state.rejected += 1
        raise ApiError(
            429,
            f"the server is busy: {busy.limit} requests are already waiting or running",
            f"retry after {busy.retry_after} s (the Retry-After header)",
            code="queue_full",
            headers={"Retry-After": str(busy.retry_after)},
        ) from None


async def _collect(job: _RequestJob) -> Transcript:
    async with contextlib.aclosing(job.batches):
        async for batch in job.batches:
            _feed(job, batch)
    return job.transcript


async def _first(batches: AsyncIterator[list[SessionEvent]]) -> list[SessionEvent] | None:
    """The first events, or None when the generation never started (the client left while waiting)."""
    try:
        return await batches.__anext__()
    except StopAsyncIteration:
        return None


def _feed(job: _RequestJob, batch: list[SessionEvent]) -> list[Piece]:
    """A batch of session events as pieces to send; a matched stop sequence cancels the generation."""
    pieces = [piece for event in batch for piece in job.transcript.feed(event)]
    if job.transcript.stopped:
        job.cancel.set()
    return merge_pieces(pieces)


async def _stream(
    job: _RequestJob, shape: Shape, reply: Reply, first: list[SessionEvent], include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE body: the opening, one write per batch, then the summary, usage and [DONE]."""
    opening = shape.opening(reply)
    encoder = StreamEncoder(shape, reply)
    try:
        head = [sse.event(opening)] if opening is not None else []
        yield b"".join(head + [encoder.encode(piece) for piece in _feed(job, first)])
        async for batch in job.batches:
            pieces = _feed(job, batch)
            if pieces:
                yield b"".join(encoder.encode(piece) for piece in pieces)
    except Exception as exc:
        if not isinstance(exc, KatpilotError):
            log.exception("internal error while streaming")
        yield sse.error_event(api_errors.stream_error(exc)) + sse.DONE
        return
    response = job.transcript.response
    assert response is not None
    tail = [sse.event(shape.closing(reply, job.transcript, katpilot_info(response, job.controls)))]
    if include_usage:
        tail.append(sse.event(shape.usage_chunk(reply, usage(response))))
    yield b"".join([*tail, sse.DONE])


async def _unless_disconnected(request: Request, work: Awaitable[T], cancel: threading.Event) -> T | None:
    """`work`'s result, or None if the client disconnects first (then the generation is cancelled)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        cancel.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is read already: the next message is that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _strip_validation_responses(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route; this server answers validation errors with 400."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # fastapi: replacing app.openapi is its documented hook
