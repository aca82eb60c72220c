"""One sandbox for running untrusted code: eval's verifiers, the data stage's checks, the RL rewards.

`run_python(code)` runs model-written Python in a child interpreter and always comes back: with the
output (capped), the exit status, and a `reason` when the sandbox stopped or refused something.

Written by hand on purpose: no well-kept library does this. The options are either whole-machine
isolation (containers, gVisor, nsjail, firejail: external binaries, often root or user namespaces,
too heavy for thousands of short test runs on a laptop) or abandoned pure-Python "restricted
execution" projects. What an eval needs is narrower: stop runaways (loops, allocation, fork bombs,
output floods) and refuse the obvious hostile acts (network, writes outside a scratch directory,
spawning processes), cheaply, with a reason the report can show.

How each threat is stopped (POSIX only; Linux is the tested platform):

- Wall time: the parent waits on the child's pidfd and pipes with a deadline, then SIGKILLs the child's
  whole process group (`start_new_session=True` makes the child a group leader), so nothing it
  started outlives the run. The group is also killed after every normal exit, before the leader is
  reaped (a zombie leader keeps the group id reserved, so the kill cannot hit a recycled id).
- CPU: `RLIMIT_CPU` (SIGXCPU at the soft limit, SIGKILL a second later).
- Memory: `RLIMIT_AS`; allocation fails with MemoryError (recorded) or the child dies.
- File size: `RLIMIT_FSIZE` (Python ignores SIGXFSZ, so a too-big write is an OSError). Core dumps:
  `RLIMIT_CORE` 0.
- Fork bombs: process creation is refused by the audit hook (below), and `RLIMIT_NPROC` is the
  backstop. RLIMIT_NPROC counts every task (thread) of the *user*, not of the child, so it is set to
  the user's current task count plus `_NPROC_MARGIN`, counted from /proc at each run. The kernel
  ignores it for root, so under root only the hook and the group kill stand (with `RLIMIT_AS`
  bounding threads, whose stacks count against it).
- Output floods: stdout and stderr are pipes read by the parent up to `max_output_bytes` each; past
  the cap the group is killed (a program that floods its output is treated as a runaway).
- Network, writes outside the scratch directory, new processes, signals to other processes, native
  code (ctypes): refused by a `sys.addaudithook` hook installed by a small prelude before the user's
  code runs. The refusal raises PermissionError in the child and is also reported to the parent on a
  private pipe, so a program that catches the error still shows the refusal in `reason`.
- Secrets and stray state: the child is `python -I -B -X utf8` (no PYTHON* variables, no user site,
  no cwd on sys.path, no bytecode writes), `-S` unless `site_packages=True` (stdlib only, and about
  20 ms faster), gets a minimal environment (no API keys), and runs in a fresh temporary directory
  (its cwd, HOME and TMPDIR) that is removed afterwards.

The limits are set with `resource.setrlimit` in the child's prelude rather than in `preexec_fn`: the
calls are the same, but `preexec_fn` is unsafe in a threaded parent (eval runs several sandboxes at
once) and stops subprocess from using vfork.

Limits of this design, said plainly: audit hooks are a guard against runaways and ordinary hostile
code, not a security boundary against code written to escape *this* sandbox (a determined attacker
with a memory-corruption bug or enough introspection can get past an in-process hook). Reading
files is allowed anywhere. There is no network namespace (`unshare` needs root or user namespaces,
which are often disabled; it is not used). For adversarial workloads, run the whole eval in a
container or VM.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

__all__ = ["SandboxResult", "run_python"]

# Tasks allowed above the user's current count when RLIMIT_NPROC applies (not root): room for the
# interpreter's own threads and the user's other programs starting a few while the run lasts.
_NPROC_MARGIN = 32
# The prelude's refusal reports are short lines; more than this is the program writing to the pipe.
_EVENTS_CAP = 4096
# After the child exits (or is killed), how long to wait for its pipes to close before giving up.
_DRAIN_S = 1.0

# Refusal kinds the prelude reports, and how `reason` words them.
_REFUSALS = {
    "network": "network refused",
    "write": "write outside the scratch directory refused",
    "process": "process creation refused",
    "native": "native code (ctypes) refused",
    "signal": "signal to another process refused",
    "tamper": "tampering with the sandbox refused",
}

# Runs in the child before the user's code: limits, then the audit hook, then the code itself as
# `__main__`. Arguments (sys.argv[1:]): scratch dir, CPU s, address-space bytes, file-size bytes,
# RLIMIT_NPROC (-1: leave alone), events fd, path of the user's program. Everything the hook uses is
# bound as a default argument, so rebinding module globals does not change what it checks.
_PRELUDE = r"""
import os, sys, resource

def _kp_boot():
    scratch, cpu_s, mem, fsize, nproc, efd, main = sys.argv[1:8]
    cpu_s, mem, fsize, nproc, efd = int(cpu_s), int(mem), int(fsize), int(nproc), int(efd)
    R = resource

    def limit(which, value):
        soft, hard = R.getrlimit(which)
        if hard != R.RLIM_INFINITY:
            value = min(value, hard)
        R.setrlimit(which, (value, value))

    limit(R.RLIMIT_CORE, 0)
    hard = R.getrlimit(R.RLIMIT_CPU)[1]
    hard = cpu_s + 1 if hard == R.RLIM_INFINITY else min(cpu_s + 1, hard)
    R.setrlimit(R.RLIMIT_CPU, (min(cpu_s, hard), hard))  # SIGXCPU at the soft limit, SIGKILL at the hard
    limit(R.RLIMIT_AS, mem)
    limit(R.RLIMIT_FSIZE, fsize)
    if nproc >= 0:
        limit(R.RLIMIT_NPROC, nproc)

    def _kp_refuse(kind, what, _efd=efd, _write=os.write, _exc=PermissionError):
        try:
            _write(_efd, kind.encode() + b"\n")
        except OSError:
            pass
        raise _exc("katpilot sandbox: " + what + " refused")

    def _kp_inside(path, _root=scratch, _prefix=scratch.rstrip(os.sep) + os.sep, _fspath=os.fspath,
                   _decode=os.fsdecode, _real=os.path.realpath):
        if isinstance(path, int):
            return True
        try:
            real = _real(_decode(_fspath(path)))
        except (TypeError, ValueError):
            return False
        return real == _root or real.startswith(_prefix) or real == "/dev/null"

    # A fresh import of _posixsubprocess would bring back fork_exec; the hook refuses re-imports.
    import _posixsubprocess

    def _kp_fork_exec(*args, _refuse=_kp_refuse, **kwargs):
        _refuse("process", "process creation")

    _posixsubprocess.fork_exec = _kp_fork_exec

    process_events = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "os.system",
                                "os.exec", "os.spawn", "os.startfile", "subprocess.Popen", "pty.spawn"})
    path_events = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
                   "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,),
                   "os.chown": (0,), "os.utime": (0,), "os.chflags": (0,), "os.lchflags": (0,),
                   "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,), "os.mkfifo": (0,),
                   "os.mknod": (0,)}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def _kp_hook(event, args, _refuse=_kp_refuse, _inside=_kp_inside, _proc=process_events,
                 _paths=tuple(path_events.items()), _wflags=write_flags, _isdir=os.path.isdir,
                 _pid=os.getpid(), _str=str, _int=int, _isinstance=isinstance, _getattr=getattr):
        if event == "open":
            path, mode, flags = args
            if _isinstance(path, _int) or _inside(path):
                return
            if (_isinstance(flags, _int) and flags & _wflags) or (
                _isinstance(mode, _str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
            ):
                _refuse("write", "write outside the scratch directory")
            if mode is None and _isdir(path):  # a directory fd outside would allow dir_fd= writes
                _refuse("write", "directory handle outside the scratch directory")
        elif event.startswith("socket."):
            if event != "socket.gethostname":
                _refuse("network", "network access")
        elif event in _proc:
            _refuse("process", "process creation")
        elif event == "import":
            if args[0] in ("_ctypes", "ctypes", "_posixsubprocess"):
                _refuse("native", "importing " + args[0])
        elif event == "os.kill" or event == "os.killpg":
            if args[0] not in (0, _pid):
                _refuse("signal", "a signal to another process")
        elif event == "object.__setattr__":
            if _getattr(args[0], "__qualname__", "").startswith("_kp_boot."):
                _refuse("tamper", "changing the sandbox")
        else:
            for name, positions in _paths:
                if event == name:
                    for i in positions:
                        if i < len(args) and args[i] is not None and not _inside(args[i]):
                            _refuse("write", "changing files outside the scratch directory")
                    return

    with open(main, "rb") as f:
        source = f.read()
    code = compile(source, main, "exec")
    module = type(sys)("__main__")
    module.__file__ = main
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [main]
    sys.path.insert(0, scratch)
    sys.addaudithook(_kp_hook)
    try:
        exec(code, module.__dict__)
    except MemoryError:
        try:
            os.write(efd, b"memory\n")
        except OSError:
            pass
        raise

_kp_boot()
"""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did.

    `ok` is true when the program exited with status 0 and the sandbox did not stop it. `reason` says
    why the sandbox stopped it ("timed out after 10 s", "CPU limit", "memory limit", "output capped at
    N bytes", "killed by signal N") or what it refused ("network refused", ...), even when the
    program caught the refusal and went on; None when nothing of the kind happened (a program that
    failed on its own has `ok` false, its `returncode` and its traceback in `stderr`).
    """

    ok: bool
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    reason: str | None
    duration_s: float
    refused: tuple[str, ...] = ()  # refusal kinds, first occurrence order ("network", "write", ...)
    cpu_s: float = 0.0  # user + system CPU time of the child
    pid: int = 0  # the child's pid, which was also its process group and session id


def run_python(
    code: str,
    *,
    timeout_s: float = 10,
    cpu_s: int = 10,
    memory_mb: int = 512,
    max_output_bytes: int = 64_000,
    max_file_mb: int = 16,
    site_packages: bool = False,
) -> SandboxResult:
    """Run `code` as `__main__` in a sandboxed child interpreter and return what happened.

    Never raises for anything the code does; raises OSError only when the child cannot be started.
    `site_packages=True` lets the code import the installed packages (slower start, and more code
    that runs before the hook cannot see it).
    """
    start = time.perf_counter()
    scratch = os.path.realpath(tempfile.mkdtemp(prefix="katpilot-sandbox-"))
    try:
        main = os.path.join(scratch, "main.py")
        with open(main, "w", encoding="utf-8") as f:
            f.write(code)
        events_r, events_w = os.pipe()
        argv = [sys.executable, "-I", "-B", "-X", "utf8", *([] if site_packages else ["-S"]), "-c", _PRELUDE]
        argv += [scratch, str(cpu_s), str(memory_mb * 2**20), str(max_file_mb * 2**20), str(_nproc_limit())]
        argv += [str(events_w), main]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=scratch,
                env=_child_env(scratch),
                start_new_session=True,
                pass_fds=(events_w,),
            )
        except BaseException:
            os.close(events_r)
            raise
        finally:
            os.close(events_w)
        try:
            outcome = _supervise(proc, events_r, time.monotonic() + timeout_s, max_output_bytes)
        finally:
            os.close(events_r)
            rc, used_cpu_s = _reap(proc)
    finally:
        _remove_tree(scratch)

    stdout, stderr = (bytes(b[:max_output_bytes]).decode("utf-8", "replace") for b in outcome.streams)
    refused = tuple(dict.fromkeys(k for k in outcome.events if k in _REFUSALS))
    reason: str | None
    if outcome.killed_for == "timeout":
        reason = f"timed out after {timeout_s:g} s"
    elif outcome.killed_for == "output":
        reason = f"output capped at {max_output_bytes} bytes"
    elif rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and used_cpu_s >= cpu_s - 0.05):
        reason = "CPU limit"
    elif "memory" in outcome.events or stderr.rstrip().endswith("MemoryError"):
        reason = "memory limit"
    elif refused:
        reason = _REFUSALS[refused[0]]
    elif rc < 0:
        reason = f"killed by signal {-rc} ({_signal_name(-rc)})"
    else:
        reason = None
    return SandboxResult(
        ok=rc == 0 and outcome.killed_for is None,
        returncode=rc,
        stdout=stdout,
        stderr=stderr,
        reason=reason,
        duration_s=time.perf_counter() - start,
        refused=refused,
        cpu_s=used_cpu_s,
        pid=proc.pid,
    )


@dataclass
class _Outcome:
    streams: tuple[bytearray, bytearray]
    events: list[str]
    killed_for: str | None  # "timeout" or "output": the parent killed the group


def _supervise(proc: subprocess.Popen[bytes], events_fd: int, deadline: float, cap: int) -> _Outcome:
    """Read the child's pipes until it exits, killing its group at the deadline or past the cap.

    Returns with the leader exited but not reaped, and every process of its group killed.
    """
    assert proc.stdout is not None and proc.stderr is not None
    out, err, ev = bytearray(), bytearray(), bytearray()
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, events_fd: ev}
    caps = {proc.stdout.fileno(): cap, proc.stderr.fileno(): cap, events_fd: _EVENTS_CAP}
    killed_for: str | None = None
    exited = False
    drain_until = float("inf")
    pidfd = _pidfd_open(proc.pid)
    with selectors.DefaultSelector() as sel:
        for fd in buffers:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                if not exited and killed_for is None and now >= deadline:
                    killed_for = "timeout"
                    _kill_group(proc.pid)
                if exited and (len(sel.get_map()) == 0 or now >= drain_until):
                    break
                if exited:
                    wait = drain_until - now
                elif killed_for is None:
                    wait = deadline - now
                else:
                    wait = 1.0  # killed: the pidfd (or the poll below) says when it is gone
                if pidfd is None and not exited:
                    wait = min(wait, 0.01)
                for key, _ in sel.select(max(wait, 0.0)):
                    fd = int(key.fd)
                    if fd == pidfd:
                        sel.unregister(fd)
                        exited = True
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(fd)
                        continue
                    buffer = buffers[fd]
                    room = caps[fd] + 1 - len(buffer)
                    if room > 0:
                        buffer += data[:room]
                    if len(buffer) > caps[fd] and fd != events_fd and killed_for is None:
                        killed_for = "output"
                        _kill_group(proc.pid)
                if pidfd is None and not exited:
                    exited = _has_exited(proc.pid)
                if exited and drain_until == float("inf"):
                    _kill_group(proc.pid)  # strays; the zombie leader still holds the group id
                    drain_until = time.monotonic() + _DRAIN_S
                    if pidfd is not None and pidfd in sel.get_map():
                        sel.unregister(pidfd)
        finally:
            if pidfd is not None:
                os.close(pidfd)
    events = ev[:_EVENTS_CAP].decode("ascii", "replace").split()
    return _Outcome((out, err), events, killed_for)


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Make sure the child is dead and reaped: its exit code (negative: signal) and CPU seconds."""
    if not _has_exited(proc.pid):
        _kill_group(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _has_exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (so its process group id stays reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _pidfd_open(pid: int) -> int | None:
    """A pidfd (readable once the child exits), or None where the platform has none (then: polling)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _nproc_limit() -> int:
    """RLIMIT_NPROC for the child: the user's task count now plus a margin; -1 for root (ignored)."""
    uid = os.getuid()
    if uid == 0 or os.geteuid() == 0:
        return -1
    tasks = 0
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return -1  # no /proc (macOS): the audit hook alone refuses process creation
    for entry in entries:
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    tasks += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return tasks + _NPROC_MARGIN


def _child_env(scratch: str) -> dict[str, str]:
    """A minimal environment: nothing of the user's (API keys, tokens) reaches untrusted code."""
    return {"PATH": os.defpath, "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _remove_tree(path: str) -> None:
    """Remove the scratch directory, even where the code made parts of it unwritable."""
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                try:
                    os.chmod(os.path.join(root, name), 0o700)
                except OSError:
                    pass
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"
