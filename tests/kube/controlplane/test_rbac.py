"""The control plane runs with the ``istiod`` ServiceAccount's token and the RBAC that
``ambient install`` grants it, nothing more: without one of its rules it does not get
ready, and says clearly what is refused; with the rule back it heals on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ambient.devcluster import DevCluster
from ambient.kube.api import ClusterTarget, Forbidden, KubeClient, load_config
from ambient.kube.kinds import KindInfo
from tests.kube.controlplane.conftest import RunningPlane, ambient, spawn_plane, stop_plane
from tests.kube.controlplane.test_status import next_heartbeat

pytestmark = [pytest.mark.slow, pytest.mark.kube]

CLUSTER_ROLE = KindInfo(
    "ClusterRole", "rbac.authorization.k8s.io", "v1", "clusterroles", namespaced=False
)
SECRETS = KindInfo("Secret", "", "v1", "secrets")


async def test_the_account_is_not_admin(sa_kubeconfig: Path) -> None:
    client = KubeClient(load_config(ClusterTarget(sa_kubeconfig)))
    try:
        with pytest.raises(Forbidden, match="403"):
            await client.get(SECRETS.path("istio-system"))
        await client.get(KindInfo("Pod", "", "v1", "pods").path())  # what it may do
    finally:
        await client.close()


async def test_a_missing_rule_is_reported_and_healed(
    installed: DevCluster, admin: KubeClient, spawned_without_pods: RunningPlane
) -> None:
    plane = spawned_without_pods

    def refused(status: dict[str, Any]) -> bool:
        pods = next(w for w in status["watches"] if w["kind"] == "Pod")
        return not status["ready"] and "403" in str(pods["error"])

    status = await next_heartbeat(admin, refused, timeout=60)
    pods = next(w for w in status["watches"] if w["kind"] == "Pod")
    assert not pods["synced"]
    assert all(w["synced"] for w in status["watches"] if w["kind"] != "Pod")
    log = plane.log_text()
    assert "pods: GET /api/v1/pods: 403 Forbidden" in log
    assert "the control plane's account may not list/watch pods: check its ClusterRole" in log
    assert plane.process.poll() is None
    assert not (plane.state / "controlplane.json").exists()  # it serves nothing yet

    # `ambient install` puts the rule back: the control plane gets ready on its own.
    done = ambient("install", "--kubeconfig", str(installed.kubeconfig))
    assert done.returncode == 0, done.stderr
    ready = await next_heartbeat(admin, lambda s: s["ready"] and s.get("xds_address"), timeout=90)
    assert all(w["synced"] and not w["error"] for w in ready["watches"])
    info = json.loads((plane.state / "controlplane.json").read_text())
    assert info["xds_address"] == ready["xds_address"]


@pytest.fixture
async def spawned_without_pods(
    installed: DevCluster, admin: KubeClient, sa_kubeconfig: Path, tmp_path: Path
) -> Any:
    """The ClusterRole without its rule for pods, then a control plane started under it
    (``ambient install`` in the test restores the rule; so does this fixture's end)."""
    role = await admin.get(CLUSTER_ROLE.path(None, "ambient-istiod"))
    stripped = [
        {**r, "resources": [x for x in r["resources"] if x != "pods"]}
        if "pods" in r.get("resources", [])
        else r
        for r in role["rules"]
    ]
    await admin.patch(
        CLUSTER_ROLE.path(None, "ambient-istiod"),
        {"rules": stripped},
        "application/merge-patch+json",
    )
    plane = spawn_plane(sa_kubeconfig, tmp_path / "state", tmp_path / "controlplane.log")
    try:
        yield plane
    finally:
        stop_plane(plane)
        done = ambient("install", "--kubeconfig", str(installed.kubeconfig))
        assert done.returncode == 0, done.stderr
