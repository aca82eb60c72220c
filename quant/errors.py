"""The one error type of `katpilot quant`: a KatpilotError, so every front end shows one line and exits 2."""

from __future__ import annotations

from katpilot.errors import KatpilotError


class QuantError(KatpilotError):
    """An export, quantization or check cannot start or did not finish; nothing is left at the output path."""
