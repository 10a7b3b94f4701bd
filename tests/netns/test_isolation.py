"""``ambient up --netns`` (both process models): pods cannot read the mesh's keys nor reach
its control sockets (the node agent's included), and cannot undo their own capture.

The pod launcher enters the pod's network namespace itself (as ``ip netns exec``
does: /sys and /etc/netns/<pod>/ mounted), hides the mesh's folders, then drops
to the pod's user: a pod has no capability in its namespace, so it cannot
remove the nftables rules that send its traffic to ztunnel.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Mesh
from tests.e2e.isolation import assert_refused, pod_says, run_probe, secret_targets
from tests.e2e.test_isolation import open_folder, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["processes", "single-process"])
def mesh(request: pytest.FixtureRequest) -> Iterator[Mesh]:
    folder = open_folder()
    config = write_config(folder)
    running = Mesh(
        config,
        folder / "state",
        folder / "up.log",
        single_process=request.param == "single-process",
        up_args=("--netns",),
    ).start(wait=60)
    try:
        yield running
    finally:
        running.stop()
        running.run("down")
        shutil.rmtree(folder, ignore_errors=True)


def test_pods_cannot_read_keys_or_reach_control_sockets(mesh: Mesh) -> None:
    targets = secret_targets(mesh)
    if "single" not in mesh.status()["mode"]:
        assert any("nodeagent-" in t for t in targets), targets  # the node agent's sockets
    report = run_probe(mesh, mesh.config_dir.parent, "probe", targets)
    assert (report["uid"], report["gid"]) == (65534, 65534)
    assert_refused(report)
    rooted = run_probe(
        mesh, mesh.config_dir.parent, "probe-root", targets, security={"runAsUser": 0}
    )
    assert rooted["uid"] == 0
    assert_refused(rooted)


def test_a_pod_cannot_remove_its_own_capture(mesh: Mesh) -> None:
    said = pod_says(
        mesh,
        mesh.config_dir.parent,
        "unredirect",
        ["sh", "-c", 'nft delete table inet ambient 2>&1; echo "NFT $?"; exec sleep infinity'],
        "NFT ",
        security={"runAsUser": 0},  # even root in its user namespace
    )
    assert said == "1"
    log = (mesh.state_dir / "logs" / "shop_unredirect_probe.log").read_text()
    assert "Operation not permitted" in log
