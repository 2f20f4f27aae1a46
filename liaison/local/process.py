"""Start background processes and stop them by pid (never by name), with pid files we own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

# Children started by this process, kept so that they are reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


def start_detached(
    argv: list[str], *, log_file: Path, pid_file: Path, env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start argv in its own session with output to log_file; the pid goes to pid_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
        )
    _children[proc.pid] = proc
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def running_children() -> list[tuple[int, list[str]]]:
    """Processes this process started that still run (pid, command line)."""
    return [(pid, [str(a) for a in proc.args])  # type: ignore[union-attr]  # args is a list here
            for pid, proc in list(_children.items()) if proc.poll() is None]


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_pid(pid_file: Path, *, must_contain: str) -> int | None:
    """The pid in pid_file if that process still runs and its command line has `must_contain`.

    The check stops a stale pid file from making us signal an unrelated process that reused the pid.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not is_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return pid if must_contain in cmdline else None


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, *, grace_s: float = 30.0) -> bool:
    """SIGTERM, wait up to grace_s, then SIGKILL. Returns True if it had to kill."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid):
            return False
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and is_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    return True
