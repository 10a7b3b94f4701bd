"""``ambient down``: stop the mesh of a state folder and remove what ``--netns`` made
(and the pod addresses ``ambient up --kubeconfig`` left on ``lo`` if it was killed).

The namespaces are found by the mesh's name prefix, which is derived from the
state folder's path alone, so this works after ``kill -9`` of ``ambient up``
with no record left behind. A mesh still running gets SIGTERM (its own clean
shutdown), then SIGKILL if it has not exited after :data:`STOP_TIMEOUT` seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from ambient.local.statedir import MeshNotRunning, StateDir
from ambient.netns import mesh_prefix
from ambient.nodeagent.agent import STATE_FILE, cleanup, leftovers

STOP_TIMEOUT = 20.0


def down(state: StateDir) -> list[str]:
    """Stop and clean up; returns the lines to print."""
    lines: list[str] = []
    try:
        info = state.read_mesh_file()
    except MeshNotRunning:
        pass
    else:
        pid = int(info["pid"])
        lines.append(f"stopping the mesh (pid {pid})")
        _stop(pid)
        state.clear_mesh_file()
    prefix = mesh_prefix(state.root)
    nodes = state.root / "nodes"
    for record in sorted(nodes.glob("*/network.json")) if nodes.is_dir() else []:
        from ambient.kubelet.addresses import remove_recorded

        label = remove_recorded(record.parent)
        if label is not None:
            lines.append(f"addresses of node {record.parent.name} ({label}) removed")
    if os.geteuid() != 0:
        if leftovers(prefix)["netns"]:
            lines.append("network namespaces of this mesh remain: run `ambient down` as root")
        return lines
    removed = cleanup(prefix)
    (state.root / STATE_FILE).unlink(missing_ok=True)
    for name in removed:
        lines.append(f"netns/{name} deleted")
    left = leftovers(prefix)
    if left["netns"] or left["etc"]:
        lines.append(f"could not remove: {', '.join(left['netns'] + left['etc'])}")
    if not lines:
        lines.append(f"nothing to do: no mesh and no namespaces for {state.root}")
    return lines


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
