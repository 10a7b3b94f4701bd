"""Start, recognise and stop a dev cluster's processes.

Each component runs in its own session (a terminal's Ctrl-C reaches only the
script), stdin from /dev/null, stdout and stderr into its log file. A process is
remembered as (pid, start time from ``/proc/PID/stat``) so that ``down`` from
another process never signals a recycled pid. With ``tie_to_parent`` (the test
fixture) the kernel kills a component when the process that started it dies
(``PR_SET_PDEATHSIG``), so even a ``kill -9`` of pytest leaves no orphan; the
``up`` command leaves them running on purpose (``down`` stops them).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessRef", "alive", "start", "stop"]

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessRef:
    name: str
    pid: int
    start_time: int  # clock ticks since boot, field 22 of /proc/PID/stat


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of ``pid``, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[19])


def alive(ref: ProcessRef) -> bool:
    """True while the very process ``ref`` names runs (not a zombie, pid not recycled)."""
    stat = _stat(ref.pid)
    return stat is not None and stat[1] == ref.start_time and stat[0] not in ("Z", "X")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def start(
    name: str, argv: list[str], log: Path, *, cwd: Path, tie_to_parent: bool
) -> tuple[subprocess.Popen[bytes], ProcessRef]:
    """Start ``argv`` with output to ``log``; returns the Popen and a ref for ``down``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,
        )
    stat = _stat(proc.pid)
    return proc, ProcessRef(name, proc.pid, stat[1] if stat else 0)


def stop(ref: ProcessRef, proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps it when it is our child."""
    if proc is not None and proc.poll() is not None:
        return
    if not alive(ref):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(ref.pid, signal.SIGTERM)
    if _wait_gone(ref, proc, grace):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(ref.pid, signal.SIGKILL)
    _wait_gone(ref, proc, 5.0)


def _wait_gone(ref: ProcessRef, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while alive(ref):  # not our child: its parent (init or a subreaper) reaps it
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
