"""Start background processes and stop them by pid (never by name), with pid files we own.

What the local stack starts keeps its files to its owner: each child runs with umask 077 (so the
broker's data and logs are 0600 in 0700 folders) and with an environment holding no secret (a
process's environment, like its argv, is readable in `/proc` by anyone who may inspect it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from liaison.security.credentials import private_dir, write_private

PRIVATE_UMASK = 0o077
"""Files a child creates are its owner's only (0600, folders 0700)."""

SECRET_NAME = re.compile(r"PASSW(OR)?D|_PASS$|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY", re.IGNORECASE)
"""Variables a child never inherits: by their name, they may hold a secret."""

# Children started by this process, kept so that they are reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


def child_environ(*, drop: Iterable[str] = (), drop_prefixes: tuple[str, ...] = (),
                  base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without secrets: named ones, `drop`, and every `drop_prefixes` one.

    A child that needs a credential gets the path of its 0600 file (`LIAISON_CREDENTIALS`), never
    the password itself.
    """
    dropped = set(drop)
    return {key: value for key, value in (os.environ if base is None else base).items()
            if key not in dropped and not key.startswith(drop_prefixes) and not SECRET_NAME.search(key)}


def start_detached(
    argv: list[str], *, log_file: Path, pid_file: Path, env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start argv in its own session with output to log_file; the pid goes to pid_file.

    Without `env`, the child gets the caller's environment minus secrets (`child_environ`).
    """
    private_dir(log_file.parent)
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # a log file from before this change may be group-readable
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=child_environ() if env is None else env, cwd=cwd,
            umask=PRIVATE_UMASK,
        )
    _children[proc.pid] = proc
    write_private(pid_file, f"{proc.pid}\n")
    return proc.pid


def running_children() -> list[tuple[int, list[str]]]:
    """Processes this process started that still run (pid, command line)."""
    return [(pid, [str(a) for a in proc.args])  # type: ignore[union-attr]  # args is a list here
            for pid, proc in list(_children.items()) if proc.poll() is None]


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie.

    A JVM's main thread can end before its other threads do (the shutdown hooks run on): the
    process's own `stat` then says zombie while it still runs. Our own children are asked with
    `poll()`; for others, any thread that is not a zombie means the process still runs.
    """
    if (proc := _children.get(pid)) is not None:
        if proc.poll() is None:
            return True
        del _children[pid]
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return not threads or any(_state(f"/proc/{pid}/task/{tid}/stat") != "Z" for tid in threads)


def _state(stat_file: str) -> str:
    try:
        return Path(stat_file).read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"  # gone meanwhile, or unreadable: not known to be a zombie


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
