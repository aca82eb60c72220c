"""A real `katpilot serve` process on a free loopback port, for the server tests and the benchmark.

The server is started with `--port 0` and reports the port it got on stderr ("... at
http://127.0.0.1:PORT/v1"), so there is no race for a port. Its output goes to a file (a pipe
nobody reads would fill up and block it) that is shown when it fails to start.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY = re.compile(r"katpilot: serving .* at (http://\S+)/v1")
START_TIMEOUT_S = 60


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(home: Path) -> dict[str, str]:
    """The environment with a private KATPILOT_HOME and no KATPILOT_* overrides of the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATPILOT_")}
    env["KATPILOT_HOME"] = str(home)
    return env


@contextmanager
def running_server(home: Path, *args: str) -> Iterator[Server]:
    """Start `katpilot serve --port 0 ARGS`, wait until it answers /health, stop it afterwards."""
    log_dir = Path(tempfile.mkdtemp(prefix="katpilot-serve-"))
    log = log_dir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "katpilot", "serve", "--port", "0", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=server_env(home),
        )
    try:
        server = Server(_wait_ready(process, log), process, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    base_url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"katpilot serve exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        if base_url is None:
            found = READY.search(log.read_text(errors="replace"))
            base_url = found.group(1) if found else None
        if base_url is not None:
            try:
                with urllib.request.urlopen(base_url + "/health", timeout=5) as reply:
                    if reply.status == 200:
                        return base_url
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"katpilot serve did not start in {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')}")
