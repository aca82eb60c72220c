"""A conversation: engine + profile + gate + the user's think controls -> typed events and stats.

Every front end (ask, chat, serve, lsp, eval, the trainer's rollouts) gets model output through a
session, so think controls, budgets, thresholds, statistics and cancellation exist once.

One response runs in phases over one growing raw prompt (the KV cache makes each continuation cost
only its new tokens):
1. prompt = chat template + prefill (forced mode, or the profile's auto opening);
2. stream tokens into the gate; stop the stream when the session must step in:
   - KAT decision point (`</judge>` seen, think=auto): score p(on), pick the mode by threshold,
     append the chosen tag and continue;
   - a judge longer than JUDGE_MAX_TOKENS: close it, then decide as above;
   - the think budget spent: close the think block in the model's format and continue;
   - `</answer>` (KAT): done.

Who settled the mode is reported as it happened (`gate.DecidedBy`): the model, the user, or no one. A
plain model has no decision point, and a response can end before reaching one; calling either
"the model's decision" would credit AutoThink with savings it never made.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

from katpilot import gate
from katpilot.chat_template import Message, render
from katpilot.config import check_value
from katpilot.engine.base import Engine, SamplingParams, StreamStats
from katpilot.errors import ContextOverflowError, KatpilotError
from katpilot.gate import NO_DECISION, DecidedBy, Decision, End, ModeGate, Segment, Text
from katpilot.profiles import JUDGE_MAX_TOKENS, Profile
from katpilot.terms import Mode, ThinkMode

# Room kept for the answer when old turns are trimmed: at most a quarter of the window.
ANSWER_ROOM_FRACTION = 4


@dataclass(frozen=True)
class ThinkControls:
    """The user's say over thinking, per request."""

    think: ThinkMode = "auto"
    budget: int | None = None  # think tokens before the think block is closed
    threshold: float = 0.5  # think=auto: think when p(on) >= threshold

    def __post_init__(self) -> None:
        """The config file's rules for these settings, so every front end refuses the same values."""
        for name in ("think", "budget", "threshold"):
            value, problem = check_value(name, getattr(self, name))
            if problem:
                raise KatpilotError(f"{name} {problem}", f"see `katpilot config show` for the {name} setting")
            object.__setattr__(self, name, value)  # normalised: "0.3" -> 0.3, 1 -> 1.0

    def updated(self, **raw: object) -> ThinkControls:
        """These controls with some replaced by raw user input ("on", "256", "0.3").

        The one place raw text enters: `__post_init__` checks and normalises it by the config
        file's rules, so the fields hold checked values whatever the input's type was.
        """
        changes: dict[str, Any] = dict(raw)
        return replace(self, **changes)


@dataclass(frozen=True)
class Notice:
    """Something the session did that the user should know (trimmed turns, a budget reached)."""

    text: str


@dataclass
class ResponseStats:
    """Per-response statistics; times in seconds."""

    prompt_tokens: int = 0
    reused_prompt_tokens: int = 0
    completion_tokens: int = 0
    judge_tokens: int = 0
    think_tokens: int = 0
    answer_tokens: int = 0
    other_tokens: int = 0  # tags and whitespace between blocks
    tokens_per_s: float = 0.0
    time_to_first_token_s: float | None = None
    time_to_first_answer_token_s: float | None = None
    total_s: float = 0.0
    finish_reason: str = "stop"


@dataclass
class Response:
    """One assistant response, split by segment."""

    judge: str
    think: str
    answer: str
    mode: Mode
    decided_by: DecidedBy
    p_on: float | None
    threshold: float
    profile: str
    model: str
    stats: ResponseStats
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The `--json` shape: answer, think, judge, mode, decided_by, p_on, stats, and context."""
        return asdict(self)


@dataclass(frozen=True)
class Finished:
    """The last event of a response."""

    response: Response


SessionEvent = Text | Decision | End | Notice | Finished


@dataclass(frozen=True)
class Completed:
    """The last item of a raw completion (`ChatSession.complete`): all its text and its statistics."""

    text: str
    stats: ResponseStats


class _Segments:
    """Collects the gate's text per segment and turns each segment's leading whitespace into GAP.

    The gate keeps whitespace where the format puts it ("<answer>\\n42"); people and API clients
    want "42". Moving the leading run to GAP keeps every character while streaming clean text.
    """

    def __init__(self) -> None:
        self.parts: dict[Segment, list[str]] = {s: [] for s in Segment}
        self._started: set[Segment] = set()

    def clean(self, event: Text) -> list[Text]:
        seg = event.segment
        if seg is Segment.GAP or seg in self._started:
            self.parts[seg].append(event.text)
            return [event]
        body = event.text.lstrip()
        lead = event.text[: len(event.text) - len(body)]
        out = []
        if lead:
            self.parts[Segment.GAP].append(lead)
            out.append(Text(Segment.GAP, lead))
        if body:
            self._started.add(seg)
            self.parts[seg].append(body)
            out.append(Text(seg, body))
        return out

    def text(self, segment: Segment) -> str:
        return "".join(self.parts[segment]).rstrip()


class ChatSession:
    """A multi-turn conversation with one engine and one profile."""

    def __init__(
        self,
        engine: Engine,
        profile: Profile,
        system_prompt: str | None = None,
        sampling: SamplingParams | None = None,
        history: Iterable[Message] = (),
    ) -> None:
        self.engine = engine
        self.profile = profile
        self.system_prompt = system_prompt
        self.sampling = sampling or SamplingParams()
        self.history: list[Message] = list(history)

    def clear(self) -> None:
        """Forget the conversation: the next `send` starts a new chat (same engine, prompt, sampling)."""
        self.history = []

    # -- prompt -----------------------------------------------------------------------------------

    def _messages(self, user_text: str, think: ThinkMode, history: list[Message]) -> list[Message]:
        system = self.system_prompt or ""
        if think == "on" and self.profile.think_instruction:
            system = f"{system}\n\n{self.profile.think_instruction}".strip()
        head = [Message("system", system)] if system else []
        return head + history + [Message("user", user_text)]

    def _render(self, messages: list[Message]) -> str:
        info = self.engine.info
        prompt = render(info.chat_template, messages, info.bos_token, info.eos_token)
        if self.profile.name == "think":
            # Templates of R1 distills open the think block themselves; our prefill does that.
            stripped = prompt.rstrip()
            if stripped.endswith(gate.THINK_OPEN):
                prompt = stripped[: -len(gate.THINK_OPEN)]
        return prompt

    def build_prompt(self, user_text: str, think: ThinkMode, max_tokens: int) -> tuple[str, list[str]]:
        """The rendered prompt, trimming the oldest turns if it does not fit; returns notices too."""
        n_ctx = self.engine.info.n_ctx
        room = min(max_tokens, n_ctx // ANSWER_ROOM_FRACTION)
        history = list(self.history)
        dropped = 0
        while True:
            prompt = self._render(self._messages(user_text, think, history))
            used = self.engine.count_tokens(prompt)
            if used + room <= n_ctx:
                break
            if not history:
                if used < n_ctx - 1:
                    break  # no turn left to drop: answer in what room remains
                raise ContextOverflowError(
                    f"the question is {used} tokens but the context window is {n_ctx}",
                    "shorten the input or raise n_ctx (--n-ctx, config key n_ctx)",
                )
            history = history[2:]  # the oldest user turn and its answer
            dropped += 1
        notices = []
        if dropped:
            notices.append(f"dropped the {dropped} oldest turn(s) to fit the {n_ctx}-token context window")
            self.history = history
        return prompt, notices

    # -- one response -----------------------------------------------------------------------------

    def send(
        self,
        user_text: str,
        controls: ThinkControls | None = None,
        cancel: threading.Event | None = None,
        sampling: SamplingParams | None = None,
    ) -> Generator[SessionEvent, None, None]:
        """Ask and stream the answer as events; the last one is `Finished`.

        A generator, not just an iterator: a caller that stops reading early (a stop sequence, a
        newer LSP request) calls `.close()`, which closes the engine's stream at once.
        """
        run = _ResponseRun(self, controls or ThinkControls(), cancel, sampling or self.sampling)
        yield from run.events(user_text)
        response = run.response
        self.history += [Message("user", user_text), Message("assistant", response.answer)]
        yield Finished(response)

    def ask(
        self,
        user_text: str,
        controls: ThinkControls | None = None,
        cancel: threading.Event | None = None,
        sampling: SamplingParams | None = None,
    ) -> Response:
        """`send` without streaming."""
        for event in self.send(user_text, controls, cancel, sampling):
            if isinstance(event, Finished):
                return event.response
        raise AssertionError("send() always ends with Finished")

    # -- a raw prompt -----------------------------------------------------------------------------

    def complete(
        self,
        prompt: str,
        sampling: SamplingParams | None = None,
        cancel: threading.Event | None = None,
        stop: Callable[[str], bool] | None = None,
    ) -> Generator[str | Completed, None, None]:
        """Continue a raw prompt: each text piece as it comes, then `Completed` with the statistics.

        Why it exists: a fill-in-the-middle prompt (the LSP's, built from the model's FIM tokens)
        is not a chat. It gets no chat template, no system prompt, no prefill, no gate and no think
        controls; nothing is trimmed and the history is neither read nor changed. The prompt goes to
        the engine as it is. What it shares with `send` is what every generation owes a front end:
        the session's sampling (or `sampling`), `cancel` checked before every token, and
        `ResponseStats` with the finish reason ("stop", "length", "context" or "cancelled"). Every
        token is an answer token.

        `stop(text so far)` returning True ends the completion after that piece, with finish reason
        "stop" (as a stop sequence would), so a caller that cuts the text still gets `Completed`.
        Closing the generator early works as for `send`: the engine's stream closes at once.
        """
        t0 = time.perf_counter()
        stats = ResponseStats()
        engine_stats = StreamStats()
        text = ""
        first_piece_at: float | None = None
        last_piece_at = 0.0
        stopped = False
        stream = self.engine.stream(prompt, sampling or self.sampling, cancel, engine_stats)
        try:
            for piece in stream:
                last_piece_at = time.perf_counter()
                if first_piece_at is None:
                    first_piece_at = last_piece_at
                text += piece
                yield piece
                if stop is not None and stop(text):
                    stopped = True
                    break
        finally:
            stream.close()
        stats.prompt_tokens = engine_stats.prompt_tokens
        stats.reused_prompt_tokens = engine_stats.reused_tokens
        stats.completion_tokens = stats.answer_tokens = engine_stats.generated_tokens
        if first_piece_at is not None:
            stats.time_to_first_token_s = stats.time_to_first_answer_token_s = first_piece_at - t0
        stats.tokens_per_s = _tokens_per_s(stats.completion_tokens, first_piece_at, last_piece_at)
        stats.total_s = time.perf_counter() - t0
        stats.finish_reason = "stop" if stopped else engine_stats.finish_reason or "stop"
        yield Completed(text, stats)


def _tokens_per_s(tokens: int, first_piece_at: float | None, last_piece_at: float) -> float:
    """The generation rate between the first piece and the last (the first token's wait excluded)."""
    if first_piece_at is None or tokens <= 1 or last_piece_at <= first_piece_at:
        return 0.0
    return (tokens - 1) / (last_piece_at - first_piece_at)


class _Action(Enum):
    """Why the session stops the model's stream to step in before it goes on."""

    ANSWER_DONE = "answer_done"  # `</answer>` seen (kat): the response is complete
    DECIDE = "decide"  # `</judge>` seen (kat, think=auto): score p(on) and choose the mode
    CLOSE_JUDGE = "close_judge"  # the judge reached JUDGE_MAX_TOKENS: close it, then decide
    END_IN_JUDGE = "end_in_judge"  # the model stopped inside the judge: close it, then decide
    CLOSE_THINK = "close_think"  # the think budget is spent: close the block so the model answers
    END_IN_THINK = "end_in_think"  # the model stopped while thinking: close the block once


class _ResponseRun:
    """The state of one response while it streams (one `ChatSession.send`)."""

    def __init__(
        self, session: ChatSession, controls: ThinkControls, cancel: threading.Event | None, sampling: SamplingParams
    ) -> None:
        self.session = session
        self.profile = session.profile
        self.engine = session.engine
        self.controls = controls
        self.cancel = cancel
        self.sampling = sampling
        self.gate = ModeGate(self.profile.gate_tags(controls.think))
        self.segments = _Segments()
        self.stats = ResponseStats()
        self.notices: list[str] = []
        self.p_on: float | None = None
        self.text = ""  # prompt + everything after it so far
        self.closed_think = False  # the session closed the think block once already
        self.decision_tried = False  # the KAT decision point was handled (scored or not)
        # think=auto on a profile with no decision point (plain): whatever mode the text shows,
        # nobody chose it, so the gate's "model" is reported as NO_DECISION.
        self.nobody_decides = controls.think == "auto" and self.profile.decision == "none"
        self.response: Response

    # events ----------------------------------------------------------------------------------

    def _emit(self, events: list[gate.Event]) -> Iterator[SessionEvent]:
        for event in events:
            if isinstance(event, Text):
                for clean in self.segments.clean(event):
                    if clean.segment is Segment.ANSWER and self.stats.time_to_first_answer_token_s is None:
                        self.stats.time_to_first_answer_token_s = time.perf_counter() - self.t0
                    yield clean
            elif isinstance(event, Decision):
                yield self._reported(event)

    def _reported(self, decision: Decision) -> Decision:
        """The gate's decision as it happened: a plain model's answer text settles no choice."""
        if self.nobody_decides and decision.decided_by == "model":
            return Decision(decision.mode, NO_DECISION, None)
        return decision

    def _inject(self, text: str) -> Iterator[SessionEvent]:
        """Append text the session writes into the assistant turn (prefills, closing tags)."""
        self.text += text
        yield from self._emit(self.gate.feed(text))

    def _notice(self, text: str) -> Notice:
        self.notices.append(text)
        return Notice(text)

    def _decide(self, mode: Mode, decided_by: DecidedBy, p_on: float | None) -> Iterator[SessionEvent]:
        yield from self._emit(self.gate.decide(mode, decided_by, p_on))

    # decision point ----------------------------------------------------------------------------

    def _separator(self) -> str:
        """What goes between the judge and the decision tag: a newline unless one is there."""
        return "" if self.text[-1:].isspace() else "\n"

    def _score_kat(self) -> float | None:
        """p(<think_on>) against p(<think_off>) right after the judge, over each tag's tokens."""
        sep = self._separator()
        p = self.profile
        scores = self.engine.continuation_logprobs(
            self.text, [sep + p.on_continuation, *(sep + c for c in p.off_continuations)]
        )
        if scores is None:
            return None
        on, off = scores[0], max(scores[1:])
        return 1.0 / (1.0 + math.exp(off - on))

    def _score_think(self) -> float | None:
        """One minus the probability that the think block closes at once."""
        scores = self.engine.continuation_logprobs(self.text, list(self.profile.off_continuations))
        if scores is None:
            return None
        return min(1.0, max(0.0, 1.0 - sum(math.exp(s) for s in scores)))

    def _kat_decision(self) -> Iterator[SessionEvent]:
        self.decision_tried = True
        held = self.gate.discard_held()  # the start of a tag the model was writing ("<", "<think")
        if held:
            self.text = self.text[: -len(held)]
        p_on = self._score_kat()
        self.p_on = p_on
        if p_on is None:
            yield self._notice("p(on) is not available from this engine: the model decides")
            return  # let the model write its own decision tag
        mode: Mode = "on" if p_on >= self.controls.threshold else "off"
        yield from self._decide(mode, "model", p_on)
        yield from self._inject(self._separator() + self.profile.prefill(mode))

    def _think_decision(self) -> Iterator[SessionEvent]:
        p_on = self._score_think()
        self.p_on = p_on
        if p_on is None:
            return
        mode: Mode = "on" if p_on >= self.controls.threshold else "off"
        yield from self._decide(mode, "model", p_on)
        if mode == "off":
            yield from self._inject(self.profile.close_think)

    # the run -----------------------------------------------------------------------------------

    def events(self, user_text: str) -> Iterator[SessionEvent]:
        self.t0 = time.perf_counter()
        think = self.controls.think
        prompt, notices = self.session.build_prompt(user_text, think, self.sampling.max_tokens)
        for text in notices:
            yield self._notice(text)
        self.text = prompt
        if think in ("on", "off"):
            yield from self._decide(think, "user", None)
        yield from self._inject(self.profile.prefill(think))
        if think == "auto" and self.profile.decision == "think":
            yield from self._think_decision()
        yield from self._generate()
        self._finish()

    def _generate(self) -> Iterator[SessionEvent]:
        profile, controls = self.profile, self.controls
        first_piece_at: float | None = None
        last_piece_at = 0.0
        finish = "stop"
        while True:
            left = self.sampling.max_tokens - self.stats.completion_tokens
            if left <= 0:
                finish = "length"
                break
            engine_stats = StreamStats()
            params = replace(self.sampling, max_tokens=left)
            action: _Action | None = None
            counted = 0  # tokens of this stream already attributed to a segment
            stream = self.engine.stream(self.text, params, self.cancel, engine_stats)
            try:
                for piece in stream:
                    now = time.perf_counter()
                    if first_piece_at is None:
                        first_piece_at = now
                        self.stats.time_to_first_token_s = now - self.t0
                    last_piece_at = now
                    self.text += piece
                    events = self.gate.feed(piece)
                    self._count(events, engine_stats.generated_tokens - counted)
                    counted = engine_stats.generated_tokens
                    yield from self._emit(events)
                    action = self._action()
                    if action is not None:
                        break
            finally:
                stream.close()
            if engine_stats.generated_tokens > counted:  # tokens that yielded no text (a cut character)
                self._count([], engine_stats.generated_tokens - counted)
            if self.stats.prompt_tokens == 0:
                self.stats.prompt_tokens = engine_stats.prompt_tokens
                self.stats.reused_prompt_tokens = engine_stats.reused_tokens
            if action is None and engine_stats.finish_reason == "stop":
                if self._judge_pending():
                    action = _Action.END_IN_JUDGE
                elif self.gate.segment is Segment.THINK and not self.closed_think:
                    action = _Action.END_IN_THINK  # it stopped while thinking: make it answer
            if action is None:
                finish = engine_stats.finish_reason or "stop"
                break
            if action is _Action.ANSWER_DONE:
                finish = "stop"
                break
            if action in (_Action.CLOSE_JUDGE, _Action.END_IN_JUDGE):
                why = f"ran past {JUDGE_MAX_TOKENS} tokens" if action is _Action.CLOSE_JUDGE else "ended unclosed"
                yield self._notice(f"the judge {why}: closed it to reach the think decision")
                yield from self._inject(profile.close_judge)
                action = _Action.DECIDE
            if action is _Action.DECIDE:
                yield from self._kat_decision()
            elif action in (_Action.CLOSE_THINK, _Action.END_IN_THINK):
                if action is _Action.CLOSE_THINK:
                    yield self._notice(f"thinking budget of {controls.budget} tokens reached: answering now")
                self.closed_think = True
                yield from self._inject(profile.close_think)
        self.stats.tokens_per_s = _tokens_per_s(self.stats.completion_tokens, first_piece_at, last_piece_at)
        self.stats.finish_reason = finish

    def _count(self, events: list[gate.Event], n_tokens: int) -> None:
        """Attribute the tokens of one piece to the segment its text went to (tags: where they lead)."""
        self.stats.completion_tokens += n_tokens
        segment = next(
            (e.segment for e in reversed(events) if isinstance(e, Text) and e.segment is not Segment.GAP),
            self.gate.segment,
        )
        names: dict[Segment | None, str] = {
            Segment.JUDGE: "judge_tokens",
            Segment.THINK: "think_tokens",
            Segment.ANSWER: "answer_tokens",
        }
        name = names.get(segment, "other_tokens")
        setattr(self.stats, name, getattr(self.stats, name) + n_tokens)

    def _action(self) -> _Action | None:
        """What the session must do before the model goes on, if anything."""
        g, profile, controls = self.gate, self.profile, self.controls
        if profile.stop_after_answer and g.answer_closed:
            return _Action.ANSWER_DONE
        if controls.think == "auto" and profile.decision == "kat" and g.mode is None:
            if g.awaiting_decision and not self.decision_tried:
                return _Action.DECIDE
            if self._judge_pending() and self.stats.judge_tokens >= JUDGE_MAX_TOKENS:
                return _Action.CLOSE_JUDGE
        if (
            controls.budget is not None
            and g.segment is Segment.THINK
            and g.mode == "on"
            and self.stats.think_tokens >= controls.budget
        ):
            return _Action.CLOSE_THINK
        return None

    def _judge_pending(self) -> bool:
        """think=auto on a KAT model, inside a judge that has not reached a decision."""
        g = self.gate
        return (
            self.controls.think == "auto"
            and self.profile.decision == "kat"
            and g.mode is None
            and g.segment is Segment.JUDGE
        )

    def _finish(self) -> None:
        g = self.gate
        reached = g.mode is not None  # else the gate settles "off" at close: nobody chose it
        for event in g.close():
            if isinstance(event, Text):
                self.segments.clean(event)
        self.stats.total_s = time.perf_counter() - self.t0
        decided_by: DecidedBy = NO_DECISION
        if reached and g.decided_by is not None and not (self.nobody_decides and g.decided_by == "model"):
            decided_by = g.decided_by
        self.response = Response(
            judge=self.segments.text(Segment.JUDGE),
            think=self.segments.text(Segment.THINK),
            answer=self.segments.text(Segment.ANSWER),
            mode=g.mode or "off",
            decided_by=decided_by,
            p_on=self.p_on,
            threshold=self.controls.threshold,
            profile=self.profile.name,
            model=self.engine.info.name,
            stats=self.stats,
            notices=self.notices,
        )
