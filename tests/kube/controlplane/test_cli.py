"""The ``ambient`` commands against a cluster (``--kubeconfig``, ``--context``, ``$KUBECONFIG``):
status, get, apply/delete/label, waypoint, analyze, and zc with a real ztunnel found
through the cluster."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ambient.devcluster import DevCluster
from ambient.kube.api import KubeClient
from ambient.kube.kinds import GATEWAY, NAMESPACE, NODE, SERVICE
from ambient.local.distributed import NodeProxy, start_ztunnel
from ambient.local.nodeclients import TokenAuth
from tests.kube.controlplane.conftest import RunningPlane
from tests.kube.controlplane.test_resilience import BAD_ROUTE
from tests.kube.controlplane.test_status import programmed
from tests.kube.controlplane.test_watch import create, pod
from tests.kube.kubelet import KubeletStandIn, watch_until
from tests.kube.ztunnel_pods import ZtunnelPods

pytestmark = [pytest.mark.slow, pytest.mark.kube]


async def ambient(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    """``ambient ARGS`` as a process (without blocking this event loop), with neither
    ``$KUBECONFIG`` nor ``$AMBIENT_STATE_DIR`` unless ``env`` sets them."""
    unset = ("KUBECONFIG", "AMBIENT_STATE_DIR")
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ambient",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**environment, **(env or {})},
        cwd=cwd,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_shows_readiness_and_watches(
    controlplane: RunningPlane, installed: DevCluster, tmp_path: Path
) -> None:
    code, out, err = await ambient(
        "status", "--kubeconfig", str(installed.kubeconfig), "--wait", "30"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["controlplane", "Ready"]
    assert any(line.split()[:2] == ["watch/Pod", "Synced"] for line in lines)
    code, out, _ = await ambient("status", "-o", "json", "--kubeconfig", str(installed.kubeconfig))
    status = json.loads(out)
    assert (
        status["alive"]
        and status["ready"]
        and status["xds_address"] == controlplane.info["xds_address"]
    )
    # $KUBECONFIG alone names the cluster too (no state folder named).
    code, out, err = await ambient(
        "status", env={"KUBECONFIG": str(installed.kubeconfig)}, cwd=tmp_path
    )
    assert code == 0 and "controlplane" in out, err
    # ... unless a local mesh's state folder is there or named.
    (tmp_path / ".ambient").mkdir()
    code, out, err = await ambient(
        "status", env={"KUBECONFIG": str(installed.kubeconfig)}, cwd=tmp_path
    )
    assert code == 1 and "controlplane" not in out, out


async def test_get_apply_label_delete(
    controlplane: RunningPlane,
    installed: DevCluster,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    namespace: str,
) -> None:
    kubeconfig = str(installed.kubeconfig)
    await kubelet.register("node-c", "192.168.95.1")
    manifest = yaml.safe_dump_all(
        [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
             "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80}]}},
            pod(namespace, "api-1", {"app": "api"}, node="node-c") | {"metadata": {"name": "api-1", "labels": {"app": "api"}}},
            BAD_ROUTE,
        ]
    )  # fmt: skip
    code, out, err = await ambient(
        "apply", "-f", "-", "-n", namespace, "--kubeconfig", kubeconfig, stdin=manifest
    )
    assert code == 0, err
    assert out.splitlines() == [
        "service/api serverside-applied",
        "pod/api-1 serverside-applied",
        "httproute/bad-re serverside-applied",
    ]
    assert (
        f"HTTPRoute {namespace}/bad-re: spec.rules[0].matches[0].path.value: invalid regex" in err
    )
    await kubelet.run(namespace, "api-1", "10.244.95.1")

    code, out, err = await ambient(
        "get", "pods", "-n", namespace, "-o", "wide", "--kubeconfig", kubeconfig
    )
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE",
        "READINESS", "GATES",
    ]  # fmt: skip
    assert (
        row.split()[0] == "api-1"
        and row.split()[2] == "Running"
        and row.split()[5:7] == ["10.244.95.1", "node-c"]
    )
    code, out, _ = await ambient(
        "get", "svc", "api", "-n", namespace, "-o", "yaml", "--kubeconfig", kubeconfig
    )
    service = yaml.safe_load(out)
    assert service["kind"] == "Service" and "managedFields" not in service["metadata"]
    assert (
        service["spec"]["clusterIP"]
        == (await admin.get(SERVICE.path(namespace, "api")))["spec"]["clusterIP"]
    )
    code, out, _ = await ambient(
        "get", "pods", "-A", "-o", "jsonpath={.items[*].metadata.name}", "--kubeconfig", kubeconfig
    )
    assert "api-1" in out.split()

    code, out, err = await ambient(
        "label", "ns", namespace, "istio.io/dataplane-mode=ambient", "--kubeconfig", kubeconfig
    )
    assert code == 0 and out.strip() == f"namespace/{namespace} labeled", err
    labels = (await admin.get(NAMESPACE.path(None, namespace)))["metadata"]["labels"]
    assert labels["istio.io/dataplane-mode"] == "ambient"

    code, out, err = await ambient(
        "delete", "-f", "-", "-n", namespace, "--kubeconfig", kubeconfig, stdin=manifest
    )
    assert code == 0, err
    assert out.splitlines()[0] == 'service "api" deleted'


async def test_waypoint_commands(
    controlplane: RunningPlane, installed: DevCluster, admin: KubeClient, namespace: str
) -> None:
    kubeconfig = str(installed.kubeconfig)
    code, out, err = await ambient(
        "waypoint", "apply", "-n", namespace, "--enroll-namespace", "--kubeconfig", kubeconfig
    )
    assert code == 0, err
    assert out.splitlines() == [
        f"waypoint {namespace}/waypoint applied",
        f'namespace {namespace} labeled with "istio.io/use-waypoint=waypoint"',
    ]
    await watch_until(admin, GATEWAY, namespace, "waypoint", programmed("False"), what="its status")
    code, out, _ = await ambient("waypoint", "list", "-n", namespace, "--kubeconfig", kubeconfig)
    assert out.splitlines()[0].split() == ["NAME", "REVISION", "TRAFFIC", "TYPE", "PROGRAMMED"]
    assert out.splitlines()[1].split() == ["waypoint", "default", "service", "False"]
    code, out, _ = await ambient("waypoint", "status", "-n", namespace, "--kubeconfig", kubeconfig)
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]
    row = out.splitlines()[1].split()
    assert row[:3] == ["waypoint", "False", "Programmed"] and row[3] in (
        "NoResources",
        "AddressNotUsable",
    )
    code, out, err = await ambient(
        "waypoint", "delete", "-n", namespace, "--kubeconfig", kubeconfig
    )
    assert code == 0 and out.strip() == f"waypoint {namespace}/waypoint deleted", err
    await watch_until(
        admin, GATEWAY, namespace, "waypoint", lambda g: g is None, what="the Gateway gone"
    )


async def test_analyze_reports_the_cluster(
    controlplane: RunningPlane, installed: DevCluster, admin: KubeClient, namespace: str
) -> None:
    kubeconfig = str(installed.kubeconfig)
    await create(admin, {**BAD_ROUTE, "metadata": {"name": "bad-re", "namespace": namespace}})
    code, out, err = await ambient("analyze", "-n", namespace, "--kubeconfig", kubeconfig)
    assert code == 79, (out, err)
    assert (
        f"Error [IST0106] (HTTPRoute bad-re.{namespace}) spec.rules[0].matches[0].path.value: invalid regex"
        in out
    )
    code, out, _ = await ambient(
        "analyze", "-n", namespace, "-o", "json", "--kubeconfig", kubeconfig
    )
    messages = json.loads(out)
    assert all(m["origin"].endswith(f".{namespace}") for m in messages if m["origin"])
    # The context's namespace by default (default here): not this one.
    code, out, err = await ambient("analyze", "--kubeconfig", kubeconfig)
    assert f"bad-re.{namespace}" not in out
    code, out, err = await ambient("analyze", "-A", "--kubeconfig", kubeconfig)
    assert f"bad-re.{namespace}" in out


@pytest.fixture
async def ztunnel(
    controlplane: RunningPlane, installed: DevCluster, admin: KubeClient, tmp_path: Path
) -> AsyncIterator[Any]:
    """Real ztunnels (admin on a given port), each authenticated to the control plane with
    its pod's service-account token (the pod made by the kubelet stand-in's ``ZtunnelPods``;
    ``pod_ip`` gives it an IP, as a DaemonSet's pod has)."""
    proxies: list[NodeProxy] = []
    pods = ZtunnelPods(admin, installed.kubeconfig, tmp_path)

    async def start(
        node: str, ip: str, admin_port: int, pod_name: str | None = None, pod_ip: str | None = None
    ) -> NodeProxy:
        info = controlplane.info
        own = await pods.start(node, name=pod_name, ip=pod_ip)
        roots = await asyncio.to_thread(Path(info["node_ca_root"]).read_bytes)
        proxy = await start_ztunnel(
            node, ip, tmp_path / node, ca_address=info["ca_address"], xds_address=info["xds_address"],
            sync_timeout=20, ports=(admin_port, 0, 0),
            token_auth=TokenAuth(own.token_source(), roots),
        )  # fmt: skip
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        await proxy.close()
    await pods.close()


async def test_zc_finds_a_nodes_ztunnel_through_the_cluster(
    controlplane: RunningPlane,
    installed: DevCluster,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    namespace: str,
    ztunnel: Any,
) -> None:
    kubeconfig = str(installed.kubeconfig)
    await kubelet.register("node-w1", "192.168.96.1")
    await create(admin, pod(namespace, "web", {"app": "web"}, node="node-w1"))
    await kubelet.run(namespace, "web", "10.244.96.1")

    # A node whose ztunnel runs as a host process: the Node's annotation names its admin.
    await kubelet.register("node-z", "192.168.96.2")
    proxy = await ztunnel("node-z", "127.0.0.1", 0)
    host, port = proxy.ztunnel.admin_addresses["admin"]
    await admin.patch(
        NODE.path(None, "node-z"),
        {"metadata": {"annotations": {"ambient.io/ztunnel-admin": f"{host}:{port}"}}},
    )
    code, out, err = await ambient(
        "zc",
        "workloads",
        "--node",
        "node-z",
        "--workload-namespace",
        namespace,
        "--kubeconfig",
        kubeconfig,
    )
    assert code == 0, err
    assert [line.split()[:4] for line in out.splitlines()[1:]] == [
        [namespace, "web", "10.244.96.1", "node-w1"]
    ]

    # A node whose ztunnel is a pod (the DaemonSet's): its pod IP, port 15000.
    await kubelet.register("node-p", "192.168.96.3")
    await ztunnel("node-p", "127.0.0.88", 15000, pod_name="ztunnel-node-p", pod_ip="127.0.0.88")
    code, out, err = await ambient(
        "zc", "services", "--node", "node-p", "-o", "json", "--kubeconfig", kubeconfig
    )
    assert code == 0, err
    assert any(s["namespace"] == "default" and s["name"] == "kubernetes" for s in json.loads(out))
    # istioctl's argument: the ztunnel pod by name (its node's ztunnel answers).
    code, out, err = await ambient(
        "zc", "services", "ztunnel-node-p.istio-system", "-o", "json", "--kubeconfig", kubeconfig
    )
    assert code == 0, err
    assert any(s["name"] == "kubernetes" for s in json.loads(out))
    code, _, err = await ambient("zc", "workloads", f"web.{namespace}", "--kubeconfig", kubeconfig)
    assert code == 1 and "only supported by Ztunnel proxies: web" in err

    # A node with neither: a clear error.
    code, _, err = await ambient("zc", "workloads", "--node", "node-w1", "--kubeconfig", kubeconfig)
    assert code == 1
    assert (
        "no ztunnel found for node node-w1: no running pod labelled app=ztunnel in istio-system"
        in err
    )
