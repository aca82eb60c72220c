"""Stop sequences over the streamed answer.

The engine has no stop strings, and it should not: the session's own tags must never be cut. So
the server applies the request's `stop` to the answer text only (never to judge or thinking, as
DeepSeek and vLLM do for reasoning models), and cancels the generation at the first match. Text
that could be the start of a stop sequence is held back until the next piece settles it, so a
client never sees a stop sequence, even one split across tokens.
"""

from __future__ import annotations


class StopMatcher:
    """Feeds answer text through; returns what may be shown; `hit` once a stop sequence matched."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            return text
        buf = self.held + text
        # The first stop sequence to be completed wins (as a token-by-token generator would see it).
        matches = [(i + len(s), i) for s in self.stops if (i := buf.find(s)) >= 0]
        if matches:
            self.hit = True
            self.held = ""
            return buf[: min(matches)[1]]
        keep = self._partial_suffix(buf)
        self.held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The held-back text at the end of the answer (no stop sequence followed it)."""
        out, self.held = self.held, ""
        return "" if self.hit else out

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest end of `buf` that some stop sequence starts with."""
        longest = min(len(buf), max(len(s) for s in self.stops) - 1)
        for k in range(longest, 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0
