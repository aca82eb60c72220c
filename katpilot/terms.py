"""Terms every layer shares, each spelled once: think modes, profile choices, the token estimate.

This module imports nothing from katpilot, so the config, the gate, the index, the engines and every
front end can use it without an import cycle or a heavy import. Values that belong to one format
live with that format instead: the AutoThink tags and who decided (`gate`), the profiles themselves
(`profiles`).
"""

from __future__ import annotations

from typing import Literal, get_args

# What a response did: think first ("on") or answer directly ("off").
Mode = Literal["on", "off"]
# What a request asks for: "auto" lets the model judge per request; "on" / "off" force the mode.
ThinkMode = Literal["auto", Mode]
THINK_MODES: tuple[ThinkMode, ...] = get_args(ThinkMode)  # ("auto", "on", "off")

# The profile setting: a format family by name (`profiles.PROFILES`), or "auto" to detect it.
ProfileChoice = Literal["auto", "kat", "think", "plain"]
PROFILE_CHOICES: tuple[ProfileChoice, ...] = get_args(ProfileChoice)

# Characters per token when no tokenizer is at hand (the repository map without a model, a remote
# server without /tokenize, the code kept around the cursor before the exact count). Code and paths
# run about 3 characters per token in BPE vocabularies (SmolLM2 gives 3.3 on katpilot's own map);
# 3 is on the low side, so estimates count more tokens than there are and budgets hold.
CHARS_PER_TOKEN = 3


def estimate_tokens(text: str) -> int:
    """Tokens in `text` at CHARS_PER_TOKEN, rounded up (0 for empty text)."""
    return -(-len(text) // CHARS_PER_TOKEN)
