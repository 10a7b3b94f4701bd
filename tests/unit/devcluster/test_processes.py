"""Starting and stopping a dev cluster's processes: recognised by start time, reaped, tied."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ambient.devcluster.processes import ProcessRef, alive, start, stop


def test_stop_terminates_and_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    proc, ref = start(
        "sleeper", ["sleep", "60"], tmp_path / "log", cwd=tmp_path, tie_to_parent=False
    )
    assert alive(ref)
    assert not alive(ProcessRef("other", ref.pid, ref.start_time + 1))  # another process's pid
    stop(ref, proc)
    assert proc.returncode == -signal.SIGTERM
    assert not alive(ref)


def test_a_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    argv = ["sh", "-c", "trap '' TERM; echo ready; exec sleep 60"]
    proc, ref = start("stubborn", argv, tmp_path / "log", cwd=tmp_path, tie_to_parent=False)
    stop(ref, proc, grace=0.5)
    assert not alive(ref)


def test_tied_components_die_with_their_parent(tmp_path: Path) -> None:
    """The test fixture's components go when pytest is killed -9: a parent that starts a
    tied child, reports its pid and then dies takes the child along."""
    script = textwrap.dedent(
        f"""
        import sys, pathlib
        sys.path[:0] = {sys.path!r}
        from ambient.devcluster.processes import start
        _, ref = start("child", ["sleep", "60"], pathlib.Path({str(tmp_path / "log")!r}),
                       cwd=pathlib.Path({str(tmp_path)!r}), tie_to_parent=True)
        print(ref.pid, ref.start_time, flush=True)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    pid, start_time = (int(x) for x in parent.stdout.split())
    child = ProcessRef("child", pid, start_time)
    # The parent has exited, so the kernel SIGKILLs the child: its pidfd turns readable.
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        readable, _, _ = select.select([fd], [], [], 10.0)
    finally:
        os.close(fd)
    assert readable, "the tied child outlived its parent"
    assert not alive(child)  # a zombie until init reaps it, or gone
