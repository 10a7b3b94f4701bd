"""The harness itself: a mesh whose start is cut short (pytest-timeout, Ctrl-C) is stopped.

Before, an exception while ``start`` waited for ``status`` left ``ambient up`` and its
processes running on the mesh addresses, and every later test of the run failed with
"mesh addresses still in use". The ``up`` here is a real process that only sleeps; the
interruption is the one stand-in: ``Mesh.run`` raises as pytest-timeout's signal would.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.harness import Mesh, pid_gone, wait_for

SLEEPER = (sys.executable, "-c", "import time; time.sleep(600)")
"""Stands in for ``ambient``: runs as ``SLEEPER up CONFIG --state-dir STATE`` and waits."""


def test_an_interrupted_start_stops_the_mesh_and_frees_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "mesh.lock"
    monkeypatch.setattr(harness, "MESH_LOCK", lock)  # a lock of its own: no queueing here
    monkeypatch.setattr(harness, "wait_mesh_addresses_free", lambda: None)  # binds none

    def interrupted(self: Mesh, *args: str, timeout: float = 30) -> None:
        raise subprocess.TimeoutExpired(["ambient", *args], timeout)

    monkeypatch.setattr(Mesh, "run", interrupted)
    mesh = Mesh(tmp_path, tmp_path / "state", tmp_path / "up.log", runner=SLEEPER)
    with pytest.raises(subprocess.TimeoutExpired):
        mesh.start(wait=1)
    assert mesh.process is not None
    wait_for("the interrupted mesh's up to exit", lambda: pid_gone(mesh.pid), timeout=30)
    with lock.open("a") as handle:  # released: taken at once
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
