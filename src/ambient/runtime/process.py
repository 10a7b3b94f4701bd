"""Container processes: spawn each in its own process group, signal and reap the group.

Every container runs in a new session, so its process id is also the id of a
process group holding everything it forks; stopping signals the group, never
one pid. Processes that leave the group on purpose (``setsid``, daemons) are
out of reach, as with any supervisor without cgroups.

Processes are started by the pod launcher (``ambient.launcher``), never forked
from this process: it may run gRPC, and a process that runs gRPC must not fork.
The launcher sets ``PR_SET_PDEATHSIG`` in each child (SIGKILL when the launcher
dies) and the launcher dies with this process, so if the supervisor dies
abruptly (SIGKILL, a crash) its containers' main processes die too; their own
children are left to notice (most servers' workers do; the others are what
``close()`` is for).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ambient.launcher.client import Launched, Launcher
from ambient.runtime.spec import ContainerLaunch

__all__ = [
    "append_note",
    "describe_exit",
    "exit_code",
    "group_alive",
    "kill_group_now",
    "launch_spec",
    "signal_group",
    "spawn",
    "wait_group_gone",
]

_SIGKILL = int(signal.SIGKILL)


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path.open("ab")


def launch_spec(launch: ContainerLaunch) -> dict[str, Any]:
    """What the launcher needs for ``launch`` (``ambient.launcher.sandbox.enter``)."""
    spec: dict[str, Any] = {
        "argv": list(launch.argv),
        "env": dict(launch.env),
        "cwd": str(launch.cwd),
    }
    if launch.netns:
        spec["netns"] = launch.netns
    if launch.hide:
        spec["hide"] = [str(path) for path in launch.hide]
    if launch.user is not None:
        spec["user"] = launch.user.to_json()
    return spec


async def spawn(launcher: Launcher, launch: ContainerLaunch, log_path: Path) -> Launched:
    """Start ``launch`` as a new process group, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return await launcher.spawn(launch_spec(launch), log_path)


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
