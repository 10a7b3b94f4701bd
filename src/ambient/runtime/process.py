"""Container processes: spawn each in its own process group, signal and reap the group.

Every container runs in a new session (``start_new_session``), so its process
id is also the id of a process group holding everything it forks; stopping
signals the group, never one pid. Processes that leave the group on purpose
(``setsid``, daemons) are out of reach, as with any supervisor without cgroups.

If the supervisor dies abruptly (SIGKILL, a crash), Linux's
``PR_SET_PDEATHSIG`` kills each container's main process with it. It is set by
a ``preexec_fn`` between fork and exec. Python warns that ``preexec_fn`` is
unsafe with threads (asyncio's child watcher uses some): the function here
only calls a ``prctl`` already looked up through ctypes, takes no locks and
imports nothing, which is what makes it safe. The alternative, a wrapper
program that calls prctl and then execs the container, would cost an
interpreter start per container. Two caveats: the signal fires when the
*thread* that forked exits, so run the supervisor on a long-lived event loop
thread; and it reaches the main process only, its own children are left to
notice (most servers' workers do; the others are what ``close()`` is for).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
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


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


async def spawn(launch: ContainerLaunch, log_path: Path) -> asyncio.subprocess.Process:
    """Start ``launch`` as a new process group, stdout and stderr appended to ``log_path``."""
    log = _open_log(log_path)
    try:
        return await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=launch.cwd,
            env=dict(launch.env),
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
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
