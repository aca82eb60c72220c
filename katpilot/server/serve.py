"""`katpilot serve`: check the options, bind, load the model, run uvicorn.

The order is chosen so that every mistake is reported before anything slow happens: option
problems and an unsafe bind first, then the port (bound here, so "address in use" is one clean
error and `--port 0` can report the port it got), then the model. The "serving" line on stderr
is printed once the server can answer; connections made before uvicorn starts wait in the backlog.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType

import uvicorn

from katpilot.config import SERVE_QUEUE_DEFAULT, Settings
from katpilot.errors import ConfigError

# Connections the kernel holds while the model loads and for bursts (the queue refuses the excess).
BACKLOG = 128
# The most seconds uvicorn waits for open streams at shutdown. Generations are cancelled at once, so
# streams normally end within a token; on a loaded 2-core machine one token took over 3 s, and the
# stream was then cut before its finish chunk and [DONE].
GRACEFUL_SHUTDOWN_S = 10


@dataclass(frozen=True)
class ServeOptions:
    """How the server listens; model and sampling settings come from `Settings`."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    queue: int = SERVE_QUEUE_DEFAULT
    insecure: bool = False
    models: str | None = None  # "all" or "a,b": serve these by name, one loaded at a time

    def __post_init__(self) -> None:
        problems, fixes = [], []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port {self.port} is not a TCP port")
            fixes.append("use a port in 1..65535 (0 picks a free one)")
        if self.queue < 1:
            problems.append(f"--queue {self.queue} leaves no room for a request")
            fixes.append("use --queue N with N >= 1")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("--api-key is empty")
            fixes.append("give a non-empty key, or leave --api-key out")
        if problems:
            raise ConfigError("; ".join(problems), "; ".join(fixes))


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (only this machine can connect)."""
    bare = host.strip("[]")
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(bare, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def check_bind(options: ServeOptions) -> None:
    """Refuse to expose the model beyond this machine without a key, unless told to."""
    if options.api_key or options.insecure or is_loopback(options.host):
        return
    raise ConfigError(
        f"refusing to listen on {options.host} without an API key: anyone who can reach it could use the model",
        "pass --api-key KEY (or set KATPILOT_API_KEY), bind 127.0.0.1, or pass --insecure if the network is trusted",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one ConfigError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ConfigError(
            f"cannot resolve --host {host}: {exc.strerror or exc}", "pass an IP address or a known host name"
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "pass another --port (or stop the program that holds this one)",
        ) from exc
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def model_choices(settings: Settings, spec: str) -> dict[str, str]:
    """`--models all` or `--models a,b`: model id -> the --model value that loads it (checked now)."""
    from katpilot.models import list_models, resolve_model

    if spec.strip() == "all":
        rows, _ = list_models(settings)
        choices = {row.name: row.name for row in rows if row.header is not None}
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        for name in names:
            resolve_model(name, settings)  # an unknown or ambiguous name fails here, in one line
        choices = {name: name for name in names}
    if not choices:
        raise ConfigError(f"--models {spec!r} names no model", "give all, or names that `katpilot models` lists")
    return choices


def serve(settings: Settings, options: ServeOptions) -> None:
    """Run the server until interrupted."""
    from katpilot.models import load_engine
    from katpilot.server.app import create_app

    check_bind(options)
    choices = model_choices(settings, options.models) if options.models is not None else {}
    if choices and settings.model not in choices:
        settings = replace(settings, model=next(iter(choices.values())))
    sock = bind(options.host, options.port)
    try:
        engine = load_engine(settings)
        try:
            app = create_app(engine, settings, api_key=options.api_key, queue_limit=options.queue)
            state = app.state.katpilot
            if choices:
                state.choices = choices
                state.model_id = next(name for name, spec in choices.items() if spec == settings.model)
                state.names = state.names | {state.model_id}
            _log_to_stderr()
            auth = "API key required" if options.api_key else "no API key"
            print(
                f"katpilot: serving {state.model_id} (profile {state.profile}, queue {options.queue}, {auth}) "
                f"at {base_url(sock)}/v1",
                file=sys.stderr,
                flush=True,
            )
            config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
            _Server(config, on_exit=state.queue.stop).run(sockets=[sock])
        finally:
            engine.close()
    finally:
        sock.close()


class _Server(uvicorn.Server):
    """uvicorn, plus: on Ctrl+C or SIGTERM the running generation is cancelled at once, so open
    streams end cleanly (finish chunk, [DONE]) instead of being cut at the graceful-shutdown timeout."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def _log_to_stderr() -> None:
    """The server's own log lines (internal errors) next to uvicorn's, on stderr."""
    logger = logging.getLogger("katpilot")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("katpilot: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
