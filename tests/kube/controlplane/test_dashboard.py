"""``ambient dashboard --kubeconfig``: the same page for a mesh on a cluster, read through
the API server (the control plane's heartbeat names its monitoring port; ztunnels are
found as ``zc`` finds them; policies and routes are the cluster's objects)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ambient.devcluster import DevCluster
from ambient.kube.api import KubeClient
from ambient.kube.kinds import NODE
from tests.kube.controlplane.conftest import RunningPlane
from tests.kube.controlplane.test_cli import ztunnel  # noqa: F401 (a fixture)
from tests.kube.controlplane.test_watch import create, pod
from tests.kube.kubelet import KubeletStandIn

pytestmark = [pytest.mark.slow, pytest.mark.kube]

_URL = re.compile(r"at (http://\S+) ")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _json(url: str) -> Any:
    with _NO_PROXY.open(url, timeout=10) as answer:
        return json.loads(answer.read())


def _graph(url: str) -> dict[str, Any]:
    graph: dict[str, Any] = _json(url + "api/graph")
    return graph


async def test_the_dashboard_shows_a_clusters_workloads_and_policies(
    controlplane: RunningPlane,
    installed: DevCluster,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    namespace: str,
    ztunnel: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    await kubelet.register("node-d", "192.168.97.1")
    await create(admin, pod(namespace, "web", {"app": "web"}, node="node-d"))
    await kubelet.run(namespace, "web", "10.244.97.1")
    await create(
        admin,
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "web-only", "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": "DENY"},
        },
    )
    proxy = await ztunnel("node-d", "127.0.0.1", 0)
    host, port = proxy.ztunnel.admin_addresses["admin"]
    await admin.patch(
        NODE.path(None, "node-d"),
        {"metadata": {"annotations": {"ambient.io/ztunnel-admin": f"{host}:{port}"}}},
    )
    # A node that is down (its ztunnel's admin address refuses) leaves the others shown.
    await kubelet.register("node-down", "192.168.97.2")
    await admin.patch(
        NODE.path(None, "node-down"),
        {"metadata": {"annotations": {"ambient.io/ztunnel-admin": "127.0.0.1:1"}}},
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "AMBIENT_STATE_DIR")}
    log = tmp_path / "dashboard.log"
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ambient", "dashboard", "--kubeconfig", str(installed.kubeconfig),
            "--port", "0", "--refresh", "1s", "--window", "10s",
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        url = None
        web: dict[str, Any] | None = None
        async with asyncio.timeout(60):
            while web is None:
                await asyncio.sleep(0.5)
                assert process.returncode is None, log.read_text()
                if url is None:
                    found = _URL.search(log.read_text())
                    url = found.group(1) if found else None
                    continue
                graph = await asyncio.to_thread(_graph, url)
                web = next((n for n in graph["nodes"] if n["id"] == f"{namespace}/web"), None)
        assert graph["mesh"] == str(installed.kubeconfig)
        assert web["identities"] == [f"spiffe://cluster.local/ns/{namespace}/sa/default"]
        assert web["pods"][0]["node"] == "node-d"
        assert {"kind": "AuthorizationPolicy", "name": f"{namespace}/web-only",
                "action": "DENY", "enforced_by": "ztunnel"} in web["policies"]  # fmt: skip
        # The control plane's monitoring port answered the targets (its own at least).
        assert not any("no scrape targets" in p for p in graph["problems"]), graph["problems"]
    finally:
        process.terminate()
        async with asyncio.timeout(20):
            await process.wait()


async def test_prometheus_discovery_lists_a_ztunnel_at_its_pods_ip(
    controlplane: RunningPlane, admin: KubeClient, kubelet: KubeletStandIn, namespace: str
) -> None:
    """A cluster's ztunnel listens on its pod's IP, not its node's: that is where the
    control plane's ``/prometheus/sd`` must send a scrape."""
    name = f"ztunnel-sd-{namespace}"[:63]
    await kubelet.register("node-sd", "192.168.98.1")
    ztunnel_pod = pod("istio-system", name, {"app": "ztunnel"}, node="node-sd", sa="ztunnel")
    await create(admin, ztunnel_pod)
    try:
        await kubelet.run("istio-system", name, "10.244.98.9")
        expected = {
            "targets": ["10.244.98.9:15020"],
            "labels": {"app": "ztunnel", "namespace": "istio-system", "pod": name,
                       "node": "node-sd", "__metrics_path__": "/metrics"},
        }  # fmt: skip
        url = f"http://{controlplane.info['monitoring_address']}/prometheus/sd"
        groups: list[dict[str, Any]] = []
        for _ in range(450):  # the watch event reaches the index: bounded polling
            groups = await asyncio.to_thread(_json, url)
            if expected in groups:
                break
            await asyncio.sleep(0.2)
        assert expected in groups, groups
        assert not [g for g in groups if g["targets"] == ["192.168.98.1:15020"]], groups
    finally:
        # as a kubelet confirms it (grace 0): a pod left Terminating in istio-system would
        # hold that namespace's deletion, and so the suite's later `ambient uninstall`, forever
        await kubelet.delete("istio-system", name)
