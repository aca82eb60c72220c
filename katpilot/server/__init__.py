"""`katpilot serve`: an OpenAI-compatible HTTP API over a local AutoThink model.

Modules, one job each:
- schemas: request and response bodies (the OpenAPI document is generated from them);
- controls: think / reasoning_effort / enable_thinking / thinking_token_budget -> ThinkControls;
- conversation: messages -> system prompt, history and the last user turn; sampling; stop;
- queue: admission (429 when full), turn-taking, the worker thread, cancellation;
- transcript, stop, responses, sse: session events -> OpenAI documents and stream chunks;
- api_errors, guard: OpenAI-style errors; the API key and body-size checks, before any body is read;
- app: the FastAPI routes; serve: bind checks, socket, uvicorn.

Nothing here imports torch; FastAPI and uvicorn load only when the server is used.
"""

from __future__ import annotations
