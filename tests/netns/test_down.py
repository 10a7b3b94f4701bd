"""After ``kill -9`` of ``ambient up --netns``, ``ambient down`` removes everything it made."""

from __future__ import annotations

import functools
import signal
import subprocess
from pathlib import Path

import pytest

from ambient.netns import mesh_prefix
from ambient.nodeagent.agent import leftovers
from tests.e2e.harness import Mesh, pid_gone, wait_for

pytestmark = pytest.mark.slow

MESH_DIR = Path(__file__).parent / "mesh"


def root_view() -> tuple[str, str, str]:
    """The root namespace's links, routes and nftables rules."""

    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    links = "\n".join(
        line.split("@")[0]
        for line in out("ip", "-o", "link", "show").splitlines()
        if "link/ether" in line or "link/loopback" in line
    )
    return links, out("ip", "route", "show", "table", "all"), out("nft", "list", "ruleset")


@pytest.mark.parametrize(
    "up_args",
    [("--netns",), ("--netns", "--single-process")],
    ids=["processes", "single-process"],  # the one-process model stays covered here
)
def test_down_after_kill_9_removes_every_namespace_link_and_rule(
    tmp_path: Path, up_args: tuple[str, ...]
) -> None:
    before = root_view()
    mesh = Mesh(MESH_DIR, tmp_path / "state", tmp_path / "up.log", up_args=up_args)
    mesh.start(wait=60)
    prefix = mesh_prefix(mesh.state_dir)
    try:
        made = leftovers(prefix)
        assert len(made["netns"]) == 6  # fabric, 2 nodes, 3 pods
        pids = [s.pid for s in mesh.pod_states().values() if s.pid]
        mesh.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        mesh.process.wait(10)  # type: ignore[union-attr]
        assert leftovers(prefix)["netns"] == made["netns"]  # nothing cleaned up by itself
    finally:
        mesh.stop()
        down = mesh.run("down")
    assert down.returncode == 0, down.stderr
    assert f"netns/{prefix}-fabric deleted" in down.stdout
    assert leftovers(prefix) == {"netns": [], "etc": []}
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed
    for pid in pids:
        wait_for(f"pod process {pid} to end", functools.partial(pid_gone, pid), timeout=10)
    assert root_view() == before
    again = mesh.run("down")
    assert again.returncode == 0 and "nothing to do" in again.stdout
