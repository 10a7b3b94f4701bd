"""The control plane runs with the ``istiod`` ServiceAccount's token and the RBAC that
``ambient install`` grants it, nothing more: without one of its rules it does not get
ready, and says clearly what is refused; with the rule back it heals on its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
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
    pods = next(w for w in ready["watches"] if w["kind"] == "Pod")
    assert pods["synced"] and pods["error"] is None
    info = json.loads((plane.state / "controlplane.json").read_text())
    assert info["xds_address"] == ready["xds_address"]

    # Every watch says it is well: an error shows only while it lasts. (A CRD's watch may
    # be refused "429 storage is (re)initializing" just after the CRD was established:
    # retried within a second, and no longer reported once the watch is accepted.)
    def all_well(status: dict[str, Any]) -> bool:
        return all(w["synced"] and w["error"] is None for w in status["watches"])

    try:
        await next_heartbeat(admin, all_well, timeout=30)
    except AssertionError as exc:
        pytest.fail(f"{exc}\ncontrol plane log:\n{plane.log_text()[-4000:]}")


async def test_a_refused_watch_reports_until_it_is_allowed(
    installed: DevCluster, admin: KubeClient, spawned_list_only: RunningPlane
) -> None:
    """Pods may be listed, not watched: the kind is synced, its watch refused (and retried
    from the listed resourceVersion, no relist). Once allowed, the watch's error goes: the
    status says what is, not what was."""

    def watch_refused(status: dict[str, Any]) -> bool:
        pods = next(w for w in status["watches"] if w["kind"] == "Pod")
        return bool(pods["synced"]) and "403" in str(pods["error"])

    await next_heartbeat(admin, watch_refused, timeout=60)
    assert "pods: watch /api/v1/pods: 403 Forbidden" in spawned_list_only.log_text()
    done = ambient("install", "--kubeconfig", str(installed.kubeconfig))
    assert done.returncode == 0, done.stderr

    def healed(status: dict[str, Any]) -> bool:
        pods = next(w for w in status["watches"] if w["kind"] == "Pod")
        return pods["error"] is None

    # the retry's back-off (at most 30 s) and a heartbeat (every 10 s)
    status = await next_heartbeat(admin, healed, timeout=60)
    pods = next(w for w in status["watches"] if w["kind"] == "Pod")
    assert pods["synced"] and pods["lists"] == 1  # the same list: only the watch came back
    assert "pods: watching again" in spawned_list_only.log_text()


Rules = list[dict[str, Any]]


def without_pods(rules: Rules) -> Rules:
    return [
        {**r, "resources": [x for x in r["resources"] if x != "pods"]}
        if "pods" in r.get("resources", [])
        else r
        for r in rules
    ]


def pods_list_only(rules: Rules) -> Rules:
    return [
        *without_pods(rules),
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    ]


async def spawn_narrowed(
    installed: DevCluster,
    admin: KubeClient,
    sa_kubeconfig: Path,
    tmp_path: Path,
    narrow: Callable[[Rules], Rules],
) -> AsyncIterator[RunningPlane]:
    """The ClusterRole's rules as ``narrow`` makes them, then a control plane started under
    it (``ambient install`` in the test restores them; so does the end)."""
    role = await admin.get(CLUSTER_ROLE.path(None, "ambient-istiod"))
    await admin.patch(
        CLUSTER_ROLE.path(None, "ambient-istiod"),
        {"rules": narrow(role["rules"])},
        "application/merge-patch+json",
    )
    plane = spawn_plane(sa_kubeconfig, tmp_path / "state", tmp_path / "controlplane.log")
    try:
        yield plane
    finally:
        stop_plane(plane)
        done = ambient("install", "--kubeconfig", str(installed.kubeconfig))
        assert done.returncode == 0, done.stderr


@pytest.fixture
async def spawned_without_pods(
    installed: DevCluster, admin: KubeClient, sa_kubeconfig: Path, tmp_path: Path
) -> AsyncIterator[RunningPlane]:
    async for plane in spawn_narrowed(installed, admin, sa_kubeconfig, tmp_path, without_pods):
        yield plane


@pytest.fixture
async def spawned_list_only(
    installed: DevCluster, admin: KubeClient, sa_kubeconfig: Path, tmp_path: Path
) -> AsyncIterator[RunningPlane]:
    async for plane in spawn_narrowed(installed, admin, sa_kubeconfig, tmp_path, pods_list_only):
        yield plane
