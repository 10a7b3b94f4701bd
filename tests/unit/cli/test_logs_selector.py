"""``ambient logs -l`` and the mesh's own pods (``ambient-system``) through the real
control API and CLI, over a backend that serves recorded pods (a fake mesh: no
processes; the log files are written by the test)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from ambient.cli.main import cli
from ambient.config.resources import Container
from ambient.local.api import ControlApi
from ambient.local.statedir import StateDir
from ambient.local.systempods import system_labels, system_pod_json
from ambient.runtime.spec import PodRun
from ambient.runtime.status import ContainerState, ContainerStatus, PodRunStatus


def _container(name: str, restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "state": "running", "restarts": restarts, "ready": True,
            "startedAt": 1_700_000_001.0, "lastExitCode": None, "message": ""}  # fmt: skip


def _app_pod(name: str, app: str, *containers: str) -> dict[str, Any]:
    return {"namespace": "shop", "name": name, "ip": "127.10.0.9", "node": "node-1",
            "workload": app, "workload_type": "deployment", "ready": True,
            "created": 1_700_000_000.0, "hostIP": "127.1.0.1", "labels": {"app": app},
            "containers": [_container(c) for c in containers]}  # fmt: skip


def _system_pod(name: str, node: str, ip: str) -> dict[str, Any]:
    run = PodRun(
        namespace="ambient-system",
        name=name,
        uid=f"ambient-system/{name}",
        ip="127.1.0.254",
        containers=(Container(name=name, command=("ambient", "x")),),
        node="",
        labels=system_labels(name),
    )
    running = ContainerStatus(name, ContainerState.RUNNING, 42, 1, 1, None)
    status = PodRunStatus("ambient-system", name, run.uid, run.ip, (running,))
    return system_pod_json(run, status, ready=True, created=1_700_000_000.0, node=node, ip=ip)


class _RecordedMesh:
    """The control API's data of a mesh with two nodes (no processes)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state

    async def status(self) -> dict[str, Any]:
        return {"ready": True, "components": [], "mode": "processes"}

    async def pods(self) -> list[dict[str, Any]]:
        return [
            _app_pod("web-2", "web", "web"),
            _app_pod("web-1", "web", "web", "side"),
            _app_pod("orders-1", "orders", "orders"),
        ]

    async def system_pods(self) -> list[dict[str, Any]]:
        return [
            _system_pod("controlplane", "", ""),
            _system_pod("ztunnel-node-1", "node-1", "127.1.0.1"),
            _system_pod("ztunnel-node-2", "node-2", "127.1.0.2"),
        ]

    async def manifests(self) -> list[dict[str, Any]]:
        return []

    async def node_list(self) -> list[dict[str, Any]]:
        return [{"name": "node-1", "ip": "127.1.0.1"}, {"name": "node-2", "ip": "127.1.0.2"}]


def _log(state: StateDir, ns: str, pod: str, container: str, lines: list[str]) -> None:
    note = "--- 2026-01-01T10:00:00Z ambient: started (pid 1) ---"
    text = "\n".join([note, *lines]) + "\n"
    (state.root / "logs" / f"{ns}_{pod}_{container}.log").write_text(text)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[StateDir]:
    state = StateDir(tmp_path / "state")
    state.create()
    api = ControlApi(_RecordedMesh(state))  # type: ignore[arg-type]
    path = await api.start()
    state.write_mesh_file({"pid": os.getpid(), "socket": path})
    for pod, node in (("ztunnel-node-1", 1), ("ztunnel-node-2", 2)):
        _log(
            state,
            "ambient-system",
            pod,
            pod,
            [f"10:00:{i:02} INFO  z{node} {i}" for i in range(12)],
        )
    _log(state, "ambient-system", "controlplane", "controlplane", ["10:00:00 INFO  cp"])
    _log(state, "shop", "web-1", "web", ["web-1 a", "web-1 b"])
    _log(state, "shop", "web-1", "side", ["side a"])
    _log(state, "shop", "web-2", "web", ["web-2 a"])
    try:
        yield state
    finally:
        await api.close()


async def ambient(state: StateDir, *args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    argv = ["--state-dir", str(state.root), *args]
    return await asyncio.to_thread(runner.invoke, cli, argv, input=stdin)


async def test_a_selector_reads_every_matching_pod_last_ten_lines_each(mesh: StateDir) -> None:
    result = await ambient(mesh, "logs", "-n", "istio-system", "-l", "app=ztunnel", "--prefix")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines == [f"[pod/ztunnel-node-1/ztunnel-node-1] 10:00:{i:02} INFO  z1 {i}"
                     for i in range(2, 12)] + [
        f"[pod/ztunnel-node-2/ztunnel-node-2] 10:00:{i:02} INFO  z2 {i}" for i in range(2, 12)
    ]  # fmt: skip
    istiod = await ambient(mesh, "logs", "-n", "ambient-system", "-l", "app=istiod")
    assert istiod.stdout == "10:00:00 INFO  cp\n"
    shop = await ambient(mesh, "logs", "-n", "shop", "-l", "app=web", "--tail", "1")
    assert shop.stdout == "web-1 b\nweb-2 a\n"
    assert 'Defaulted container "web" out of: web, side' in shop.stderr
    every = await ambient(mesh, "logs", "-n", "shop", "-l", "app in (web)", "--all-containers")
    assert every.stdout == "web-1 a\nweb-1 b\nside a\nweb-2 a\n"


async def test_selector_errors_as_kubectls(mesh: StateDir) -> None:
    none = await ambient(mesh, "logs", "-n", "shop", "-l", "app=nothing")
    assert (none.exit_code, none.stdout) == (0, "")
    assert none.stderr == "No resources found in shop namespace.\n"
    both = await ambient(mesh, "logs", "-n", "shop", "web-1", "-l", "app=web")
    assert both.exit_code == 1
    assert "only a selector (-l) or a POD name is allowed" in both.stderr
    many = await ambient(
        mesh, "logs", "-n", "istio-system", "-l", "app", "-f", "--max-log-requests", "2"
    )
    assert many.exit_code == 1
    assert (
        "you are attempting to follow 3 log streams, but maximum allowed concurrency is 2, "
        "use --max-log-requests to increase the limit" in many.stderr
    )
    mixed = await ambient(mesh, "logs", "-n", "shop", "web-1", "--all-containers", "-c", "web")
    assert "--all-containers=true should not be specified with container name web" in mixed.stderr
    bad = await ambient(mesh, "logs", "-n", "shop", "-l", "app in web")
    assert bad.exit_code == 1 and "bad selector" in bad.stderr
    nothing = await ambient(mesh, "logs", "-n", "shop")
    assert nothing.exit_code == 1 and "-l SELECTOR" in nothing.stderr


async def test_the_mesh_pods_by_name_and_daemonset(mesh: StateDir) -> None:
    one = await ambient(mesh, "logs", "-n", "istio-system", "ztunnel-node-2", "--tail", "1")
    assert one.stdout == "10:00:11 INFO  z2 11\n"
    ds = await ambient(mesh, "logs", "ds/ztunnel", "--tail", "1")
    assert ds.stdout == "10:00:11 INFO  z1 11\n"
    assert "Found 2 pods, using pod/ztunnel-node-1" in ds.stderr
    gone = await ambient(mesh, "logs", "-n", "istio-system", "ztunnel-node-9")
    assert gone.exit_code == 1
    assert 'Error from server (NotFound): pods "ztunnel-node-9" not found' in gone.stderr


async def test_get_pods_lists_the_mesh_pods_in_istio_system(mesh: StateDir) -> None:
    wide = await ambient(mesh, "get", "pods", "-n", "istio-system", "-o", "wide")
    assert wide.exit_code == 0, wide.output
    rows = [line.split() for line in wide.stdout.splitlines()]
    assert rows[0][:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert [r[0] for r in rows[1:]] == ["controlplane", "ztunnel-node-1", "ztunnel-node-2"]
    assert rows[2][1:4] == ["1/1", "Running", "1"] and rows[2][5:7] == ["127.1.0.1", "node-1"]
    assert rows[1][6] == "<none>"  # the control plane runs on no node
    shop = await ambient(mesh, "get", "pods", "-n", "shop")
    assert "ztunnel" not in shop.stdout and "web-1" in shop.stdout
    every = await ambient(mesh, "get", "pods", "-l", "app=ztunnel", "-o", "yaml")
    items = yaml.safe_load(every.stdout)["items"]
    assert [i["metadata"]["namespace"] for i in items] == ["ambient-system"] * 2
    assert items[0]["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    assert items[0]["spec"]["serviceAccountName"] == "ztunnel"
    assert items[0]["spec"]["nodeName"] == "node-1"


async def test_a_mesh_pod_applied_back_is_unchanged(mesh: StateDir) -> None:
    text = (
        await ambient(mesh, "get", "pod", "ztunnel-node-1", "-n", "istio-system", "-o", "yaml")
    ).stdout
    applied = await ambient(mesh, "apply", "-f", "-", stdin=text)
    assert (applied.exit_code, applied.stdout) == (0, "pod/ztunnel-node-1 unchanged\n")
    stray = text.replace("name: ztunnel-node-1", "name: ztunnel-node-7")
    refused = await ambient(mesh, "apply", "-f", "-", stdin=stray)
    assert refused.exit_code == 1
    assert "ambient-system holds the mesh's own processes" in refused.stderr


async def test_zc_takes_a_ztunnel_pod_as_istioctl(mesh: StateDir) -> None:
    other = await ambient(mesh, "zc", "log", "web-1.shop")
    assert other.exit_code == 1
    assert "only supported by Ztunnel proxies: web-1" in other.stderr
    gone = await ambient(mesh, "zc", "workloads", "ztunnel-node-9.istio-system")
    assert gone.exit_code == 1 and 'pods "ztunnel-node-9" not found' in gone.stderr
    both = await ambient(mesh, "zc", "certs", "pod/ztunnel-node-1", "--node", "node-2")
    assert both.exit_code == 1 and "runs on node node-1, not on --node node-2" in both.stderr
    kind = await ambient(mesh, "zc", "certs", "deploy/ztunnel")
    assert kind.exit_code == 1 and "give a ztunnel pod" in kind.stderr


async def test_get_daemonset_ztunnel_as_kubectl(mesh: StateDir) -> None:
    out = await ambient(mesh, "get", "ds", "-n", "istio-system", "-o", "wide")
    assert out.exit_code == 0, out.output
    header, _ = [line.split("   ") for line in out.stdout.splitlines()]
    assert [c.strip() for c in header if c.strip()] == [
        "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR",
        "AGE", "CONTAINERS", "IMAGES", "SELECTOR",
    ]  # fmt: skip
    cells = out.stdout.splitlines()[1].split()
    assert cells[:7] == ["ztunnel", "2", "2", "2", "2", "2", "<none>"]
    assert cells[-2:] == ["ztunnel", "app=ztunnel"]
    text = (await ambient(mesh, "get", "daemonsets", "-A", "-o", "yaml")).stdout
    applied = await ambient(mesh, "apply", "-f", "-", stdin=text)
    assert (applied.exit_code, applied.stdout) == (0, "daemonset.apps/ztunnel unchanged\n")
    none = await ambient(mesh, "get", "ds", "-n", "shop")
    assert none.stderr == "No resources found in shop namespace.\n"


async def test_get_nodes_as_kubectl(mesh: StateDir) -> None:
    out = await ambient(mesh, "get", "nodes", "-o", "wide")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
        "KERNEL-VERSION", "CONTAINER-RUNTIME",
    ]  # fmt: skip
    cells = lines[1].split()
    assert cells[:3] == ["node-1", "Ready", "<none>"] and cells[5:8] == [
        "127.1.0.1", "<none>", "<unknown>",
    ]  # fmt: skip
    assert cells[-1].startswith("ambient://")
    text = (await ambient(mesh, "get", "no", "node-2", "-o", "yaml")).stdout
    applied = await ambient(mesh, "apply", "-f", "-", stdin=text)
    assert (applied.exit_code, applied.stdout) == (0, "node/node-2 unchanged\n")
    gone = await ambient(mesh, "apply", "-f", "-", stdin=text.replace("node-2", "node-9"))
    assert gone.exit_code == 1 and "node node-9 does not run" in gone.stderr
