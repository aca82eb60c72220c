"""A request's think knobs -> the session's ThinkControls, with one documented precedence.

Clients speak several dialects for the same three controls (mode, budget, threshold). Each control
is taken from the first source in this order that sets it; the server's configuration comes last:

| control   | 1 (katpilot)      | 2                                      | 3                  | 4 (server)  |
|-----------|-------------------|----------------------------------------|--------------------|-------------|
| mode      | `think`           | `chat_template_kwargs.enable_thinking` | `reasoning_effort` | `think`     |
| budget    | `think_budget`    | `thinking_token_budget` (vLLM)         | `reasoning_effort` | `budget`    |
| threshold | `think_threshold` | -                                      | -                  | `threshold` |

katpilot's own fields win because they are the most specific; the template switch beats the
effort level because it is a yes/no answer where the effort is a hint. docs/server.md has the table.
"""

from __future__ import annotations

from typing import TypeVar

from katpilot.server.schemas import ThinkFields
from katpilot.session import ThinkControls
from katpilot.terms import ThinkMode

# reasoning_effort=low: think only if the model judges it worth it, and briefly. 256 tokens is room
# for a short plan, a fraction of a typical AutoThink think block (many hundreds of tokens).
LOW_EFFORT_BUDGET = 256

# reasoning_effort -> (mode, budget or None for "not set here")
EFFORT: dict[str, tuple[ThinkMode, int | None]] = {
    "none": ("off", None),
    "minimal": ("off", None),
    "low": ("auto", LOW_EFFORT_BUDGET),
    "medium": ("auto", None),
    "high": ("on", None),
    "xhigh": ("on", None),
    "max": ("on", None),
}

SERVER = "server"

V = TypeVar("V")


def resolve_controls(fields: ThinkFields, default: ThinkControls) -> tuple[ThinkControls, dict[str, str]]:
    """The effective controls, and for each one the request field (or "server") that set it."""
    effort = EFFORT[fields.reasoning_effort] if fields.reasoning_effort else (None, None)
    enable = fields.chat_template_kwargs.enable_thinking if fields.chat_template_kwargs else None
    mode, mode_by = _first(
        ("think", fields.think),
        ("chat_template_kwargs.enable_thinking", None if enable is None else ("on" if enable else "off")),
        ("reasoning_effort", effort[0]),
        server=default.think,
    )
    budget, budget_by = _first(
        ("think_budget", fields.think_budget),
        ("thinking_token_budget", fields.thinking_token_budget),
        ("reasoning_effort", effort[1]),
        server=default.budget,
    )
    threshold, threshold_by = _first(("think_threshold", fields.think_threshold), server=default.threshold)
    controls = ThinkControls(think=mode, budget=budget, threshold=threshold)
    return controls, {"think": mode_by, "think_budget": budget_by, "think_threshold": threshold_by}


def _first(*sources: tuple[str, V | None], server: V) -> tuple[V, str]:
    """The first (value, source) whose value is set, else the server's default."""
    for name, value in sources:
        if value is not None:
            return value, name
    return server, SERVER
