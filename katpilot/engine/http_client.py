"""Requests to one OpenAI-compatible server: retries on 429/503, every failure a one-line EngineError.

Plain `http.client` (no new dependency) with one connection per request: a streamed answer is
stopped by closing its connection, which is how every server notices a cancelled generation.
Nothing here knows about completions or tokens; `remote.py` decides what to ask.
(Named `http_client`, not `http`, so that it never shadows the standard library's `http`.)
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from katpilot.engine.server_url import KEY_FIX, RemoteSpec
from katpilot.errors import EngineError

RETRY_STATUSES = (429, 503)
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # back-off between attempts on 429/503
MAX_RETRY_AFTER_S = 30.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # the longest silence between two streamed tokens before giving up
MESSAGE_CHARS = 200  # a server's own error text is cut to this, on one line


class RemoteStatusError(EngineError):
    """The server answered a request with an HTTP error status (kept for callers that can degrade)."""

    def __init__(self, message: str, fix: str, status: int) -> None:
        super().__init__(message, fix)
        self.status = status


class Client:
    """Requests to one server. The API key goes only into the Authorization header, never a message."""

    def __init__(self, spec: RemoteSpec, api_key: str | None, read_timeout: float) -> None:
        self.spec = spec
        self._key = api_key
        self._read_timeout = read_timeout
        parts = urlsplit(spec.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = urlsplit(spec.root).path.rstrip("/")

    def __repr__(self) -> str:  # never the key
        return f"Client({self.spec.base_url!r})"

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=CONNECT_TIMEOUT_S, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT_S)

    def _headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def open(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request (path relative to the server root), retrying 429/503 with back-off.

        The caller reads the response and must close the connection (closing it cancels a stream).
        """
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        for attempt in range(len(RETRY_DELAYS_S) + 1):
            conn = self._connect()
            try:
                conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(self._read_timeout)
                conn.request(method, self._prefix + path, body, self._headers(body))
                resp = conn.getresponse()
            except (ConnectionRefusedError, socket.gaierror) as exc:
                conn.close()
                raise EngineError(
                    f"cannot reach the model server at {self.spec.base_url}: {reason(exc)}",
                    "start the server, or check host and port in --model",
                ) from None
            except TimeoutError:  # socket.timeout is an alias since 3.10
                conn.close()
                raise EngineError(
                    f"the model server at {self.spec.base_url} did not answer in time",
                    "check that the server is up and not overloaded",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise EngineError(
                    f"the connection to the model server at {self.spec.base_url} failed: {reason(exc)}",
                    "check that --model points at an OpenAI-compatible server (http vs https, port)",
                ) from None
            if resp.status in RETRY_STATUSES and attempt < len(RETRY_DELAYS_S):
                delay = _retry_after(resp) or RETRY_DELAYS_S[attempt]
                conn.close()
                time.sleep(delay)
                continue
            if resp.status >= 400:
                detail = _error_detail(resp)
                conn.close()
                raise _status_error(self.spec.base_url, method, path, resp.status, detail)
            return conn, resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def json(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """One request whose answer is a JSON document."""
        conn, resp = self.open(method, path, payload)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(
                f"the model server at {self.spec.base_url} broke off its answer: {reason(exc)}",
                "retry; check the server's log",
            ) from None
        finally:
            conn.close()
        try:
            return json.loads(data)
        except ValueError:
            raise not_openai(self.spec.base_url, f"{method} {path} did not return JSON") from None


def is_missing_endpoint(exc: EngineError) -> bool:
    """An answer that means "no such feature here" (404, 405, 400, 422, 500, not JSON)."""
    return isinstance(exc, RemoteStatusError) or "does not look OpenAI-compatible" in exc.message


def reason(exc: BaseException) -> str:
    """A socket or HTTP failure in a few words, for a one-line message."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return str(exc) or type(exc).__name__


def server_message(doc: object) -> str:
    """The message of an error document (`{"error": {"message": ...}}`, `{"detail": ...}`), on one line."""
    err = doc.get("error", doc.get("detail", doc)) if isinstance(doc, dict) else doc
    text = err.get("message", err) if isinstance(err, dict) else err
    return " ".join(str(text).split())[:MESSAGE_CHARS]


def not_openai(url: str, why: str) -> EngineError:
    """The server answered, but not as the OpenAI API does: most often a wrong base URL."""
    return EngineError(
        f"the server at {url} does not look OpenAI-compatible: {why}",
        "point --model at the server's /v1 base, e.g. openai+http://host:8000/v1#model",
    )


def _retry_after(resp: http.client.HTTPResponse) -> float | None:
    value = resp.getheader("Retry-After")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value else None
    except ValueError:
        return None


def _error_detail(resp: http.client.HTTPResponse) -> str:
    """The server's own error message, short, on one line ("" if it sent none we can read)."""
    try:
        return server_message(json.loads(resp.read(4096)))
    except (ValueError, OSError, http.client.HTTPException):
        return ""


def _status_error(url: str, method: str, path: str, status: int, detail: str) -> EngineError:
    said = f": {detail}" if detail else ""
    if status in (401, 403):
        return EngineError(f"the model server at {url} refused the API key (HTTP {status})", KEY_FIX)
    if status in RETRY_STATUSES:
        return EngineError(
            f"the model server at {url} stayed busy (HTTP {status}) after retries", "retry later or lower the load"
        )
    if status in (404, 405):
        return RemoteStatusError(
            not_openai(url, f"{method} {path} gave HTTP {status}").message, not_openai(url, "").fix, status
        )
    return RemoteStatusError(
        f"the model server at {url} answered {method} {path} with HTTP {status}{said}", "check the server's log", status
    )
