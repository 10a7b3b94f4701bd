"""What must not stop the controller: objects it refuses, 410 Gone, an API-server restart."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from ambient.devcluster import DevCluster, Options, up
from ambient.devcluster.processes import ProcessRef, stop
from ambient.kube.api import ClusterTarget, KubeClient, load_config
from ambient.kube.kinds import HTTPROUTE
from tests.kube.conftest import Kubectl
from tests.kube.controlplane.conftest import (
    RunningPlane,
    Subscriber,
    ambient,
    service_account_kubeconfig,
    start_plane,
    stop_plane,
)
from tests.kube.controlplane.test_status import next_heartbeat, parent
from tests.kube.controlplane.test_watch import create, pod
from tests.kube.kubelet import KubeletStandIn, watch_until

pytestmark = [pytest.mark.slow, pytest.mark.kube]

BAD_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "bad-re"},
    "spec": {
        "parentRefs": [{"group": "", "kind": "Service", "name": "api"}],
        "rules": [
            {
                "matches": [{"path": {"type": "RegularExpression", "value": "(("}}],
                "backendRefs": [{"name": "api", "port": 80}],
            }
        ],
    },
}
BAD_POLICY = {
    "apiVersion": "security.istio.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "bad-ip"},
    "spec": {
        "selector": {"matchLabels": {"app": "db"}},
        "action": "DENY",
        "rules": [{"from": [{"source": {"ipBlocks": ["300.1.1.1"]}}]}],
    },
}


def _in(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], "namespace": namespace}}


async def test_a_bad_object_is_reported_and_the_rest_flow(
    controlplane: RunningPlane, admin: KubeClient, kubelet: KubeletStandIn, namespace: str
) -> None:
    await kubelet.register("node-r", "192.168.80.1")
    async with Subscriber(controlplane, "node-r") as ztunnel:
        await create(admin, _in(namespace, BAD_ROUTE))
        await create(admin, _in(namespace, BAD_POLICY))
        # The rest flows: a pod created after them arrives.
        await create(admin, pod(namespace, "after", {"app": "after"}, node="node-r"))
        await kubelet.run(namespace, "after", "10.244.80.2")
        await ztunnel.wait(
            lambda: ztunnel.workload(namespace, "after"), what="a pod after the bad objects"
        )

        # The invalid DENY policy is enforced as a DENY of everything its selector picks.
        key = f"{namespace}/bad-ip"
        policy = await ztunnel.wait(
            lambda: next(
                (p for p in ztunnel.state.policies.authorizations() if p.key == key), None
            ),
            what="the fail-closed stand-in",
        )
        assert policy.action.value == "DENY"
        assert [g.rules for g in policy.groups] == [()]  # one group that matches everything
        assert dict(policy.selector or {}) == {"app": "db"}
        # The invalid route reaches no waypoint, and its status says why.
        assert f"HTTPRoute/{namespace}/bad-re" not in ztunnel.l7.names
        refused = await watch_until(
            admin,
            HTTPROUTE,
            namespace,
            "bad-re",
            lambda obj: parent(obj, "api"),
            what="the route's status",
        )
        assert (refused["Accepted"]["status"], refused["Accepted"]["reason"]) == (
            "False",
            "UnsupportedValue",
        )
        assert "invalid regex" in refused["Accepted"]["message"]

        log = controlplane.log_text()
        assert (
            f"invalid HTTPRoute {namespace}/bad-re: spec.rules[0].matches[0].path.value: invalid regex"
            in log
        )
        assert (
            f"invalid AuthorizationPolicy {namespace}/bad-ip: spec.rules[0].from[0].source.ipBlocks[0]"
            in log
        )
        assert f"AuthorizationPolicy {namespace}/bad-ip is enforced as a DENY of everything" in log
        status = await next_heartbeat(admin, lambda s: s["invalidCount"] >= 2)
        assert {
            (i["kind"], i["name"]) for i in status["invalid"] if i["namespace"] == namespace
        } == {
            ("HTTPRoute", "bad-re"),
            ("AuthorizationPolicy", "bad-ip"),
        }

        # Fixed, the route reaches the waypoints.
        fixed = {"path": {"type": "PathPrefix", "value": "/"}}
        await admin.patch(
            HTTPROUTE.path(namespace, "bad-re"),
            {
                "spec": {
                    "rules": [{"matches": [fixed], "backendRefs": [{"name": "api", "port": 80}]}]
                }
            },
        )
        await ztunnel.wait(
            lambda: f"HTTPRoute/{namespace}/bad-re" in ztunnel.l7.names, what="the fixed route"
        )


# -- an API-server restart, on a cluster of its own ------------------------------------------


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    cluster = up(
        tmp_path_factory.mktemp("restart") / "cluster",
        Options(tie_to_parent=True, progress=lambda _: None),
    )
    try:
        done = ambient("install", "--kubeconfig", str(cluster.kubeconfig))
        assert done.returncode == 0, done.stderr
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def own_plane(
    own_cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlane]:
    folder = tmp_path_factory.mktemp("own-cp")
    kubeconfig = service_account_kubeconfig(
        own_cluster, Kubectl(own_cluster.kubectl), folder / "kubeconfig"
    )
    plane = start_plane(kubeconfig, folder / "state", folder / "controlplane.log")
    plane.admin_kubeconfig = own_cluster.kubeconfig
    yield plane
    stop_plane(plane)


@pytest.fixture
async def own_admin(own_cluster: DevCluster) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_config(ClusterTarget(own_cluster.kubeconfig)))
    yield client
    await client.close()


def restart_apiserver(cluster: DevCluster) -> None:
    """Stop the API server (SIGTERM) and start it again with the same arguments.

    Started through ``setpriv --pdeathsig KILL`` rather than a ``preexec_fn``: this
    process runs gRPC (the subscriber), and running Python between fork and exec in a
    gRPC process can abort the child. Called from the main thread: the death signal
    follows the thread that forked."""
    index = next(i for i, p in enumerate(cluster.processes) if p.name == "kube-apiserver")
    ref = cluster.processes[index]
    argv = [a.decode() for a in Path(f"/proc/{ref.pid}/cmdline").read_bytes().split(b"\0") if a]
    stop(ref, cluster._children.get("kube-apiserver"))
    log = cluster.dir / "logs" / "kube-apiserver.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", *argv],
            cwd=cluster.dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    started = int(stat[stat.rindex(")") + 2 :].split()[19])
    cluster.processes[index] = ProcessRef("kube-apiserver", proc.pid, started)
    cluster._children["kube-apiserver"] = proc  # so that down() stops it


async def serving(client: KubeClient, timeout: float = 90.0) -> None:
    """Until the API server answers /readyz (its readiness endpoint), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.HTTPError):
            answer = await client.http.get("/readyz")
            if answer.status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the API server is not ready after {timeout:g}s")


async def test_an_apiserver_restart_loses_no_update(
    own_cluster: DevCluster, own_plane: RunningPlane, own_admin: KubeClient
) -> None:
    """The API server restarts mid-watch; changes made right after it is back reach the
    ztunnel: the watches resume from a resourceVersion the new server no longer has
    (410 Gone), relist, and the relist turns what disappeared into deletions."""
    kubelet = KubeletStandIn(own_admin)
    await kubelet.register("node-1", "192.168.90.1")
    namespace = "restart"
    await create(
        own_admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    async with Subscriber(own_plane, "node-1") as ztunnel:
        await create(own_admin, pod(namespace, "before", {"app": "a"}))
        await kubelet.run(namespace, "before", "10.244.90.1")
        await ztunnel.wait(lambda: ztunnel.workload(namespace, "before"), what="the first pod")

        restart_apiserver(own_cluster)  # the main thread (see its docstring)
        await serving(own_admin)
        await kubelet.register("node-1", "192.168.90.1")
        await kubelet.delete(namespace, "before")
        await create(own_admin, pod(namespace, "after", {"app": "a"}))
        await kubelet.run(namespace, "after", "10.244.90.2")
        await create(
            own_admin,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "x", "namespace": namespace},
            },
        )

        await ztunnel.wait(
            lambda: (
                ztunnel.workload(namespace, "before") is None
                and ztunnel.workload(namespace, "after")
            ),
            timeout=90,
            what="the pods as they are after the restart",
        )
    log = own_plane.log_text()
    assert "pods: watch /api/v1/pods: 410 Expired" in log, log[-3000:]
    assert own_plane.process.poll() is None  # it kept running throughout
