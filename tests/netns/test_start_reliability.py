"""``ambient up --netns`` (process model) starts its pods cleanly, every time.

The regression: ``up`` is a gRPC client there (its node agent follows xDS), and a
process it forked now and then died before exec from gRPC's atfork handlers
(SIGABRT "Check failed: next_worker->state == KICKED", or SIGSEGV); the
kubelet restarted the pod a second later. Pods are now started by the pod
launcher (``ambient.launcher``), which runs no gRPC.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Mesh, acquire_mesh_lock, release_mesh_lock
from tests.e2e.manifests import SLEEP, deployment, manifest, namespace

STARTS = 20
BUDGET = 900.0
"""Seconds for all the starts together (about 10 s each here); the test stops early past it."""

# The budget bounds the starts, not pytest's default 120 s: under load (or waiting for another
# mesh's addresses to be free) three starts took that long. The last start may begin just
# before the budget ends: up to a minute to be ready, and the stop.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUDGET + 180)]

MESH = manifest(
    namespace("shop"),
    deployment("shop", "sleepers", ["python3", "-c", SLEEP], replicas=6, container="sleeper",
               annotations={"ambient.io/nodes": "node-1,node-2"}),
)  # fmt: skip
_RESTARTS = re.compile(r"restarts (\d+)")


def test_twenty_netns_starts_restart_no_pod(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    acquire_mesh_lock(timeout=3000)  # once for all the starts: no other run slips in between
    try:
        restarted = _start_repeatedly(tmp_path, config)
    finally:
        release_mesh_lock()
    assert restarted == []


def _start_repeatedly(tmp_path: Path, config: Path) -> list[str]:
    """Start and stop the mesh STARTS times; every pod or component that restarted."""
    deadline = time.monotonic() + BUDGET
    restarted: list[str] = []
    for attempt in range(STARTS):
        assert time.monotonic() < deadline, f"only {attempt} starts within {BUDGET:g}s"
        base = tmp_path / f"run{attempt}"
        base.mkdir()
        mesh = Mesh(config, base / "state", base / "up.log", up_args=("--netns",))
        mesh.start(wait=60)
        try:
            components = mesh.status()["components"]
            pods = [c for c in components if c["name"].startswith("pod/")]
            assert len(pods) == 6, components
            for component in components:  # system pods too: the ztunnels are forked as well
                found = _RESTARTS.search(component["detail"])
                if found and int(found.group(1)):
                    restarted.append(f"start {attempt}: {component['name']}: {component['detail']}")
        finally:
            mesh.stop()
            mesh.run("down")
    return restarted
