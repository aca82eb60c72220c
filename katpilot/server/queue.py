"""One model, one generation at a time, behind a bounded queue.

- Admission is counted on the event loop: requests waiting or running. Over the limit a request
  is refused at once (`Busy` -> 429 with Retry-After) rather than left to pile up behind a model
  that serves one response at a time.
- Turns are taken in arrival order (an asyncio.Lock is FIFO). A whole response holds the turn,
  not just one engine call, so the KV cache of one conversation is not interleaved with another's.
- The generation runs in a worker thread, never on the event loop. Its events cross back through
  a mailbox in batches, at most one per `interval`: the loop is woken per batch, not per token
  (on a machine whose cores all decode, every wake-up is taken from the model).
- The turn and the admission slot are released when the thread is done, not when the client
  leaves: setting `cancel` stops the engine within one token, and the next request starts right
  after.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from katpilot.errors import KatpilotError

T = TypeVar("T")

# Retry-After before any request has finished: a short answer on a small model takes about a second.
INITIAL_SERVICE_S = 1.0
# Retry-After never promises more than this; clients back off on their own beyond it.
MAX_RETRY_AFTER_S = 60
# Weight of the newest request in the running average of service time.
SERVICE_EMA_WEIGHT = 0.2


class Busy(Exception):
    """The queue is full; `retry_after` is when the running request should be done, in seconds."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"the server is busy: {limit} requests are already waiting or running")
        self.limit = limit
        self.retry_after = retry_after


class Closed(KatpilotError):
    """The server is shutting down: no new generation starts."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down", "retry once it is back")


@dataclass
class Ticket:
    """One admitted request; releases its slot exactly once."""

    started: bool = False
    released: bool = False


@dataclass
class _Failure:
    error: BaseException


class _Done:
    """The end of the work: the last item posted."""


_DONE = _Done()


class GenerationQueue:
    """Admission, turn-taking and the worker thread for one model."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the queue limit must be at least 1")
        self.limit = limit
        self.in_flight = 0
        self._turn = asyncio.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="katpilot-generate")
        self._service_s = INITIAL_SERVICE_S
        self._cancels: set[threading.Event] = set()
        self.stopping = False

    def admit(self) -> Ticket:
        """A slot, or Busy when `limit` requests are already waiting or running (Closed when stopping)."""
        if self.stopping:
            raise Closed()
        if self.in_flight >= self.limit:
            raise Busy(self.limit, self.retry_after())
        self.in_flight += 1
        return Ticket()

    def release(self, ticket: Ticket) -> None:
        if not ticket.released:
            ticket.released = True
            self.in_flight -= 1

    def abandon(self, ticket: Ticket) -> None:
        """The request ended before its generation started (or never iterated it): free the slot."""
        if not ticket.started:
            self.release(ticket)

    def retry_after(self) -> int:
        """Seconds until the running request is likely done and a slot frees up."""
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(self._service_s)))

    async def run(
        self, ticket: Ticket, work: Callable[[], Iterator[T]], cancel: threading.Event, interval: float = 0.0
    ) -> AsyncGenerator[list[T], None]:
        """Wait for the turn, run `work` in the worker thread, and yield its items in batches.

        A batch is everything produced since the last one, at most one per `interval` seconds
        (the end of the work is delivered at once). Leaving early (the consumer stops iterating,
        or its task is cancelled) sets `cancel`.
        """
        try:
            await self._turn.acquire()
        except BaseException:
            self.release(ticket)
            raise
        if cancel.is_set() or self.stopping:  # the client left while it waited, or the server is stopping
            self._turn.release()
            self.release(ticket)
            if self.stopping:
                raise Closed()
            return
        loop = asyncio.get_running_loop()
        mailbox: _Mailbox[T] = _Mailbox(loop)
        try:
            future = loop.run_in_executor(self._worker, _produce, work, mailbox)
        except RuntimeError:  # the worker is shut down: the server is stopping
            self._turn.release()
            self.release(ticket)
            raise
        ticket.started = True
        self._cancels.add(cancel)
        started = time.perf_counter()
        future.add_done_callback(lambda _: self._finished(ticket, cancel, started))
        try:
            not_before = 0.0
            while True:
                taken = await mailbox.take(not_before)  # the work's items, then a failure, then the end
                not_before = loop.time() + interval
                items: list[T] = []
                failure: _Failure | None = None
                done = False
                for item in taken:
                    if isinstance(item, _Done):
                        done = True
                    elif isinstance(item, _Failure):
                        failure = item
                    else:
                        items.append(item)
                if items:
                    yield items
                if failure is not None:
                    raise failure.error
                if done:
                    return
        finally:
            cancel.set()

    def _finished(self, ticket: Ticket, cancel: threading.Event, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._service_s += SERVICE_EMA_WEIGHT * (elapsed - self._service_s)
        self._cancels.discard(cancel)
        self._turn.release()
        self.release(ticket)

    def stop(self) -> None:
        """Shutdown begins: cancel the running generation (its stream ends within a token, cleanly)
        and start no other. Safe to call from a signal handler."""
        self.stopping = True
        for cancel in list(self._cancels):
            cancel.set()

    def close(self) -> None:
        """Stop, and wait for the worker: the engine is closed next and must not be freed under a decode."""
        self.stop()
        self._worker.shutdown(wait=True, cancel_futures=True)


class _Mailbox(Generic[T]):
    """Items from the worker thread to the event loop, waking the loop only when it is waiting.

    While the consumer paces itself (between batches), items just pile up: the loop is woken
    for the next item only when the consumer is idle, and at once for the end of the work.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[T | _Failure | _Done] = []
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._wake_on_any = False

    def put(self, item: T | _Failure | _Done, final: bool = False) -> None:
        """From the worker thread."""
        with self._lock:
            self._items.append(item)
            self._ended = self._ended or final
            waiter = self._waiter
            if waiter is None or not (self._wake_on_any or final):
                return
            self._waiter = None
        try:
            self._loop.call_soon_threadsafe(_wake, waiter)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    async def take(self, not_before: float) -> list[T | _Failure | _Done]:
        """Everything posted so far, once there is something and `not_before` (loop time) has
        passed; at once if the work has ended."""
        while True:
            with self._lock:
                now = self._loop.time()
                if self._items and (self._ended or now >= not_before):
                    items, self._items = self._items, []
                    return items
                waiter = self._loop.create_future()
                self._waiter = waiter
                self._wake_on_any = now >= not_before
            timer = None if self._wake_on_any else self._loop.call_at(not_before, _wake, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _produce(work: Callable[[], Iterator[T]], mailbox: _Mailbox[T]) -> None:
    """The worker thread: run the generation and post every item (or the error), then the end."""
    try:
        for item in work():
            mailbox.put(item)
    except BaseException as exc:
        mailbox.put(_Failure(exc))
    finally:
        mailbox.put(_DONE, final=True)
