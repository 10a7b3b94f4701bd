"""Container processes: spawn each in its own process group, signal and reap the group.

Every container runs in a new session (``start_new_session``), so its process
id is also the id of a process group holding everything it forks; stopping
signals the group, never one pid. Processes that leave the group on purpose
(``setsid``, daemons) are out of reach, as with any supervisor without cgroups.

If the supervisor dies abruptly (SIGKILL, a crash), Linux's
``PR_SET_PDEATHSIG`` kills each container's main process with it. util-linux's
``setpriv --pdeathsig SIGKILL`` sets it and then execs the container (same
PID), so the supervisor never runs Python between fork and exec: CPython can
use vfork, and nothing of a multi-threaded parent (gRPC's pollers in the
``--netns`` node agent crashed a forked child now and then, "Check failed:
next_worker->state == KICKED") runs in the child. Without ``setpriv`` a
``preexec_fn`` calls ``prctl`` (only a function looked up beforehand through
ctypes: no locks, no imports). Two caveats: the signal fires when the *thread*
that forked exits, so run the supervisor on a long-lived event loop thread;
and it reaches the main process only, its own children are left to notice
(most servers' workers do; the others are what ``close()`` is for).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ambient.runtime.spec import ContainerLaunch

__all__ = [
    "append_note",
    "describe_exit",
    "exec_confirmed",
    "exec_failure",
    "exit_code",
    "group_alive",
    "kill_group_now",
    "signal_group",
    "spawn",
    "wait_group_gone",
]

_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def _load_prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has prctl
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    fn: Callable[..., int] = prctl
    return fn


_PRCTL = _load_prctl()


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when ``parent`` dies (Linux)."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal us
            os.kill(os.getpid(), _SIGKILL)

    return preexec


_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None


def _with_pdeathsig(
    argv: tuple[str, ...] | list[str],
) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` to exec and the ``preexec_fn`` (if one is still needed) for PDEATHSIG."""
    if _SETPRIV is not None:
        return [_SETPRIV, "--pdeathsig", "SIGKILL", "--", *argv], None
    return list(argv), _die_with_parent(os.getpid())


_SETPRIV_EXEC_FAILED = b"setpriv: failed to execute "
_SETPRIV_REAL = os.path.realpath(_SETPRIV) if _SETPRIV is not None else None


async def exec_confirmed(process: asyncio.subprocess.Process, timeout: float = 5.0) -> bool:
    """Whether ``setpriv`` went on to exec the container (False: it exited instead).

    Linux has no event for "this process called exec", so this watches
    ``/proc/PID/exe`` stop being setpriv, which takes a few milliseconds: the
    container is only called running once its own program runs.
    """
    if _SETPRIV_REAL is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.0005
    while loop.time() < deadline:
        if process.returncode is not None:
            return False
        try:
            if os.readlink(f"/proc/{process.pid}/exe") != _SETPRIV_REAL:
                return True
        except OSError:  # gone (a zombie has no exe): exec failed or it exited at once
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True  # still setpriv after seconds: let the exit, if any, tell


def exec_failure(returncode: int, log_path: Path) -> str | None:
    """Why the container's exec failed, if ``setpriv`` said so (exit 127, its last log line)."""
    if returncode != 127 or _SETPRIV is None:
        return None
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            lines = log.read().splitlines()
    except OSError:
        return None
    last = next((line for line in reversed(lines) if line.strip()), b"")
    if not last.startswith(_SETPRIV_EXEC_FAILED):
        return None
    return last[len(_SETPRIV_EXEC_FAILED) :].decode(errors="replace")


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


async def spawn(launch: ContainerLaunch, log_path: Path) -> asyncio.subprocess.Process:
    """Start ``launch`` as a new process group, stdout and stderr appended to ``log_path``."""
    log = _open_log(log_path)
    argv, preexec = _with_pdeathsig(launch.argv)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=launch.cwd,
            env=dict(launch.env),
            start_new_session=True,
            preexec_fn=preexec,
        )
    finally:
        log.close()  # the child has its own copy


def append_note(log_path: Path, text: str) -> None:
    """Append a timestamped line from the supervisor to a container's log."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with _open_log(log_path) as log:
        log.write(f"--- {stamp} ambient: {text} ---\n".encode())


def exit_code(returncode: int) -> int:
    """A process's exit status as shells and Kubernetes show it: 128 + N when killed by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``killed by SIGTERM (exit code 143)``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name} (exit code {exit_code(returncode)})"


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a group we started is ours
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still alive (zombies count as dead)."""
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux: zombies count as alive there
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = data[data.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def wait_group_gone(pgid: int, timeout: float, interval: float = 0.01) -> bool:
    """Poll until group ``pgid`` has no live process; False if it outlived ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
        interval = min(interval * 2, 0.1)
    return True


def kill_group_now(pgid: int) -> None:
    """SIGKILL group ``pgid`` without waiting (last resort, e.g. on cancellation)."""
    with contextlib.suppress(OSError):
        os.killpg(pgid, _SIGKILL)
