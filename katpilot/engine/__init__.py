"""Inference engines behind one interface (see `base`)."""

from katpilot.engine.base import Engine, ModelInfo, SamplingParams, StreamStats

__all__ = ["Engine", "ModelInfo", "SamplingParams", "StreamStats"]
