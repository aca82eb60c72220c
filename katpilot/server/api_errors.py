"""Errors rendered the OpenAI way: `{"error": {"message", "type", "param", "code"}}` and a status.

Every failure leaves as one of these, never as a traceback: request validation (400 naming the
field), unknown routes and models (404), auth (401), a full queue (429 with Retry-After), and
`KatpilotError`s from the session or engine, whose message and fix become the error's message.
Anything unexpected is answered with a plain 500 naming the exception type; the traceback goes to
the server's log, never to the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from katpilot.errors import ContextOverflowError, EngineError, KatpilotError, ModelFileError
from katpilot.server.queue import Closed

SCHEMA_FIX = "see the request schema at GET /openapi.json or docs/server.md"


class ApiError(KatpilotError):
    """A KatpilotError with what HTTP needs: a status, the field at fault, an error code."""

    def __init__(
        self,
        status: int,
        message: str,
        fix: str = "",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, fix)
        self.status = status
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: KatpilotError) -> JSONResponse:
    status, param, code, headers = _http_view(exc)
    return JSONResponse(error_body(status, exc.one_line(), param=param, code=code), status_code=status, headers=headers)


def stream_error(exc: BaseException) -> dict[str, Any]:
    """The SSE `data:` payload for an error after the stream has started (the openai SDK raises it)."""
    if isinstance(exc, KatpilotError):
        status, param, code, _ = _http_view(exc)
        return error_body(status, exc.one_line(), param=param, code=code)
    return error_body(500, _internal_message(exc))


def _http_view(exc: KatpilotError) -> tuple[int, str | None, str | None, dict[str, str]]:
    """Status, param, code and headers of a KatpilotError."""
    if isinstance(exc, ApiError):
        return exc.status, exc.param, exc.code, exc.headers
    if isinstance(exc, ContextOverflowError):
        return 400, "messages", "context_length_exceeded", {}
    if isinstance(exc, ModelFileError):  # at request time: the chat template refused these messages
        return 400, "messages", "template_error", {}
    if isinstance(exc, EngineError):
        return 500, None, "engine_error", {}
    if isinstance(exc, Closed):
        return 503, None, "shutting_down", {}
    return 400, None, None, {}


def _internal_message(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__} (fix: see the server log; please report it)"


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """FastAPI's validation errors as one 400 that names the first field at fault."""
    problems = [_describe(e) for e in errors] or [("body", "the request body is not valid")]
    message = "; ".join(text for _, text in problems[:5])
    param = problems[0][0]
    first = errors[0] if errors else {}
    if first.get("type") in ("json_invalid", "model_attributes_type", "missing") and param == "body":
        return ApiError(
            400, message, "send a JSON object with Content-Type: application/json", param=None, code="invalid_json"
        )
    return ApiError(400, message, SCHEMA_FIX, param=param, code="invalid_value")


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    loc = [part for part in error.get("loc", ()) if part != "body"]
    kind = error.get("type", "")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return "body", f"the request body is not valid JSON: {reason}".rstrip(": ")
    if kind == "model_attributes_type" and not loc:
        return "body", "the request body must be a JSON object"
    if kind == "missing" and not loc:
        return "body", "the request body is missing"
    # Drop pydantic's union member tags ("str", "list[...]", "function-after[...]") from the path.
    names = [str(p) for p in loc if isinstance(p, int) or not _is_type_tag(str(p))]
    param = _path(names)
    if kind == "missing":
        return param, f"field '{param}' is required"
    if kind == "extra_forbidden":
        return param, f"unknown field '{param}'"
    return param, f"invalid field '{param}': {error.get('msg', 'bad value')}"


def _is_type_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "list", "dict", "ContentPart") or "[" in part


def _path(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


def install(app: FastAPI) -> None:
    """Route every failure through the OpenAI error shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 404:
            message, fix = (
                f"no route {request.method} {request.url.path}",
                "the endpoints are listed at GET /openapi.json",
            )
        elif status == 405:
            message, fix = f"{request.method} is not allowed on {request.url.path}", "see GET /openapi.json"
        elif status == 413:
            message, fix = "the request body is larger than this server accepts", "send a shorter conversation"
        else:
            message, fix = str(exc.detail), ""
        error = ApiError(status, message, fix, code=_HTTP_CODES.get(status), headers=exc.headers)
        return error_response(error)

    @app.exception_handler(KatpilotError)
    async def _katpilot(request: Request, exc: KatpilotError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so uvicorn logs the traceback on the server.
        return JSONResponse(error_body(500, _internal_message(exc)), status_code=500)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
