"""The sandbox against real runaway and hostile programs: each is stopped or refused, with its reason."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest
from proc_helpers import process_table

from katpilot.eval.sandbox import SandboxResult, _nproc_limit, run_python


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid` (the sandbox child's group)."""
    return [pid for pid, fields in process_table().items() if int(fields[2]) == pgid]


def run(code: str, **limits: Any) -> SandboxResult:
    result = run_python(textwrap.dedent(code), **limits)
    assert group_members(result.pid) == [], "a process of the sandbox outlived the run"
    return result


def test_a_normal_program_passes_in_a_scratch_dir_that_is_removed_afterwards() -> None:
    result = run(
        """
        import os, tempfile
        with open("notes.txt", "w") as f:
            f.write("kept inside")
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("temp files land in the scratch dir too")
        print(open("notes.txt").read(), os.getcwd(), sep="\\n")
        """
    )
    assert result.ok and result.returncode == 0 and result.reason is None and result.refused == ()
    text, cwd = result.stdout.splitlines()
    assert text == "kept inside"
    assert "katpilot-sandbox-" in cwd and not os.path.exists(cwd)


def test_the_program_sees_none_of_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = run("import os; print(sorted(os.environ))")
    assert result.ok and "OPENAI_API_KEY" not in result.stdout


def test_an_infinite_loop_is_stopped_at_the_wall_time_limit() -> None:
    result = run("while True:\n    pass", timeout_s=0.5, cpu_s=30)
    assert not result.ok and result.reason == "timed out after 0.5 s"
    assert result.duration_s < 3


def test_an_infinite_loop_is_stopped_at_the_cpu_limit() -> None:
    result = run("while True:\n    pass", timeout_s=20, cpu_s=1)
    assert not result.ok and result.reason == "CPU limit"
    assert result.cpu_s >= 0.9 and result.duration_s < 5


def test_unbounded_allocation_is_stopped_at_the_memory_limit() -> None:
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(2**20))", memory_mb=128, timeout_s=20)
    assert not result.ok and result.reason == "memory limit"


def test_a_fork_bomb_is_refused_and_nothing_is_left_running() -> None:
    result = run("import os\nwhile True:\n    os.fork()")
    assert not result.ok and result.reason == "process creation refused"
    assert "PermissionError" in result.stderr


def test_a_stubborn_fork_bomb_trying_every_way_is_refused_until_the_timeout() -> None:
    result = run(
        """
        import os, subprocess, sys, multiprocessing, pty
        attempts = [
            os.fork,
            lambda: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
            lambda: os.system("sleep 60 &"),
            lambda: os.posix_spawn("/bin/sleep", ["sleep", "60"], {}),
            lambda: os.execv("/bin/sleep", ["sleep", "60"]),
            lambda: multiprocessing.Process(target=print).start(),
            pty.fork,
            lambda: __import__("_posixsubprocess").fork_exec(),
            lambda: (sys.modules.pop("_posixsubprocess", None), __import__("_posixsubprocess").fork_exec()),
        ]
        refused = 0
        while True:
            for attempt in attempts:
                try:
                    attempt()
                    print("escaped via", attempt, flush=True)
                except OSError:  # PermissionError, or pty.fork's own error after os.forkpty was refused
                    refused += 1
        """,
        timeout_s=1,
    )
    assert result.reason == "timed out after 1 s", result.stderr
    assert "escaped" not in result.stdout, result.stdout
    assert result.refused[0] == "process"


def test_rlimit_nproc_is_the_users_task_count_plus_a_margin_or_left_alone_for_root() -> None:
    limit = _nproc_limit()
    if os.geteuid() == 0:
        assert limit == -1  # the kernel ignores RLIMIT_NPROC for root
    else:
        assert limit > 32


def test_a_socket_connection_is_refused_and_the_listener_gets_nothing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')")
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert not result.ok and result.reason == "network refused"


def test_a_caught_refusal_still_shows_in_the_result() -> None:
    result = run(
        """
        import urllib.request
        try:
            urllib.request.urlopen("http://127.0.0.1:9/")
        except OSError as e:  # urllib wraps the PermissionError in a URLError
            print("caught:", e)
        """
    )
    assert result.ok and result.reason == "network refused" and result.refused == ("network",)
    assert "katpilot sandbox: network access refused" in result.stdout


@pytest.mark.parametrize(
    "write",
    [
        "open(target, 'w').write('x')",
        "open(target, 'a').write('x')",
        "import pathlib; pathlib.Path(target).write_text('x')",
        "os.close(os.open(target, os.O_WRONLY | os.O_CREAT))",
        "os.symlink(target, 'link'); open('link', 'w').write('x')",
        "open('inside', 'w').write('x'); os.rename('inside', target)",
        "os.mkdir(target)",
        "import shutil; open('inside', 'w').write('x'); shutil.copy('inside', target)",
        "fd = os.open(os.path.dirname(target), os.O_RDONLY); os.open('pwned', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
    ],
)
def test_a_write_outside_the_scratch_dir_is_refused(tmp_path: Path, write: str) -> None:
    target = tmp_path / "pwned"
    result = run(f"import os\ntarget = {str(target)!r}\n{write}")
    assert not result.ok and result.reason == "write outside the scratch directory refused", result.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_removing_files_outside_the_scratch_dir_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run(f"import os\nos.remove({str(victim)!r})")
    assert result.reason == "write outside the scratch directory refused"
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_an_output_flood_is_capped_and_stopped(stream: str) -> None:
    result = run(f"import sys\nwhile True:\n    sys.{stream}.write('x' * 1000)", max_output_bytes=10_000)
    assert not result.ok and result.reason == "output capped at 10000 bytes"
    assert len(getattr(result, stream)) == 10_000


def test_signals_to_other_processes_are_refused() -> None:
    result = run(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)")
    assert result.reason == "signal to another process refused"


def test_a_program_killed_by_a_signal_says_which() -> None:
    result = run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert not result.ok and result.returncode == -15 and result.reason == "killed by signal 15 (SIGTERM)"


def test_a_failing_program_is_not_ok_and_keeps_its_traceback() -> None:
    result = run("def f(:\n    pass")
    assert not result.ok and result.returncode == 1 and result.reason is None
    assert "SyntaxError" in result.stderr
