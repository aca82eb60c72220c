"""katpilot: a local-first coding assistant around AutoThink models."""

__version__ = "0.1.0"
