"""Checks made before a request's body is read: the API key on /v1, and the declared body size.

Done as ASGI middleware, so they come first: an unauthenticated client learns nothing about the
request format (it gets 401 before any 400), and an oversized upload is refused from its
Content-Length before a byte of it is read. The key is compared in constant time
(hmac.compare_digest), so response timing does not reveal how much of a guessed key was right.
/health and the OpenAPI document stay open: they reveal no conversation, and monitoring needs them.
"""

from __future__ import annotations

import hmac

from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from katpilot.server.api_errors import ApiError, error_response

# Declared on the /v1 routes for the OpenAPI document only; Guard enforces the key.
bearer = HTTPBearer(auto_error=False, description="The key given to `katpilot serve --api-key`.")
PROTECTED_PREFIX = "/v1"


class Guard:
    """ASGI middleware: refuse what can be refused from the headers alone."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.expected = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self.check(scope)
        if error is not None:
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """`receive`, refusing a body (one sent without Content-Length) once it passes the limit."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise HTTPException(413)  # FastAPI lets HTTPExceptions from body reading through
            return message

        return counted

    def check(self, scope: Scope) -> ApiError | None:
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and scope.get("path", "").startswith(PROTECTED_PREFIX):
            problem = self._key_problem(headers.get(b"authorization"))
            if problem:
                return ApiError(
                    401,
                    f"{problem}: this server requires one",
                    "send the header Authorization: Bearer KEY (the openai SDK: api_key=KEY)",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return ApiError(
                413,
                f"the request body is {int(length)} bytes, more than the {self.max_body_bytes} this server accepts",
                "send a shorter conversation",
                code="request_too_large",
            )
        return None

    def _key_problem(self, header: bytes | None) -> str | None:
        """None when the header carries the right bearer key, else what is wrong."""
        if not header:
            return "no API key was sent"
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return "the Authorization header is not 'Bearer KEY'"
        assert self.expected is not None
        if not hmac.compare_digest(given.strip(), self.expected):
            return "the API key is wrong"
        return None
