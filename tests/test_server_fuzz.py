"""schemathesis against a real server, driven by the server's own OpenAPI document.

Property-based requests, valid and invalid, to every operation (coverage, fuzzing and stateful
phases): no response may be a 5xx, and the server must still be up and healthy afterwards. The
server runs with a small context window and max_tokens, so generated requests that do reach the
model finish quickly; the default run uses a fixed seed so a failure reproduces, the slow one
a fresh seed and more examples.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from server_helpers import Server, running_server, server_env

SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("home"), "--n-ctx", "512", "--max-tokens", "8") as srv:
        yield srv


def fuzz(server: Server, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        *(_schemathesis()),
        "run",
        server.base_url + "/openapi.json",
        "--checks",
        "not_a_server_error",
        "--request-timeout",
        "60",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=server_env(workdir), timeout=600)


def _schemathesis() -> list[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    return [exe] if exe else SCHEMATHESIS


def assert_clean(server: Server, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "5 selected" in result.stdout  # every operation of the document was exercised
    assert server.process.poll() is None, server.output()[-4000:]
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    assert "Traceback" not in server.output()


def test_no_server_errors_on_generated_requests(server: Server, tmp_path: Path) -> None:
    assert_clean(server, fuzz(server, tmp_path, "--max-examples", "25", "--seed", "20250101"))


@pytest.mark.slow
def test_no_server_errors_long_run(server: Server, tmp_path: Path) -> None:
    assert_clean(server, fuzz(server, tmp_path, "--max-examples", "300"))
