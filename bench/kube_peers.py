"""The child processes of ``bench/controlplane_kube.py``: the control plane under test, the
simulated ztunnels, and the bare watcher that is the baseline (see that module)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

LABEL = "bench-rev"
SYNC_TIMEOUT = 600.0
CHANGE_TIMEOUT = 10.0
_TICK = os.sysconf("SC_CLK_TCK")


def _say(*words: object) -> None:
    print(*words, flush=True)


async def _readline() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_of(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def client_for(kubeconfig: str) -> Any:
    from ambient.kube.api import ClusterTarget, KubeClient, load_config

    return KubeClient(load_config(ClusterTarget(Path(kubeconfig))), timeout=120)


# -- the control plane process -----------------------------------------------------------


async def serve(kubeconfig: str) -> None:
    from ambient.controlplane import ControlPlane
    from ambient.identity.ca import CertificateAuthority
    from ambient.kube.controller import KubeController
    from ambient.xds.server import XdsServer

    client = client_for(kubeconfig)
    plane = ControlPlane(CertificateAuthority.generate(), cluster=True)
    controller = KubeController(client, plane)
    controller.start()
    await controller.wait_synced(120)
    server = XdsServer(plane, credentials=None)
    port = await server.start("127.0.0.1:0")
    _say("READY", port)
    for _ in range(100_000):
        line = (await _readline()).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "stats":
            rss, hwm = rss_mb()
            snapshot = plane.snapshot
            _say(
                "STATS",
                json.dumps(
                    {
                        "rss_mb": rss,
                        "hwm_mb": hwm,
                        "cpu_s": cpu_s(),
                        "workloads": len(snapshot.workloads),
                        "services": len(snapshot.services),
                        "batches": controller.batches,
                        "full_builds": plane._index.full_builds,
                    },
                    separators=(",", ":"),
                ),
            )
    await server.stop(0.5)
    await controller.close()
    await client.close()


# -- the subscribers ---------------------------------------------------------------------


class Subscriber:
    """A simulated ztunnel: one delta ADS stream, both types, ACKs by nonce; keeps the
    names it holds (and decodes only the workload a change is expected on)."""

    METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

    def __init__(self, port: int, node: str, shared: dict[str, Any], index: int) -> None:
        self.port, self.node, self.shared, self.index = port, node, shared, index
        self.names: set[str] = set()
        self.started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        import grpc
        from google.protobuf import struct_pb2

        from ambient.xds.codec import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, address_from_proto
        from ambient.xds.proto import core_pb2, discovery_pb2, workload_pb2

        options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options) as channel:
            call = channel.stream_stream(
                self.METHOD,
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
            )()
            metadata = struct_pb2.Struct()
            metadata.update({"NODE_NAME": self.node})
            for type_url in (ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL):
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(
                        node=core_pb2.Node(id=self.node, metadata=metadata), type_url=type_url
                    )
                )
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                self.started.set()
                if response.type_url == ADDRESS_TYPE_URL:
                    self.names.update(r.name for r in response.resources)
                    self.names.difference_update(response.removed_resources)
                    expect = self.shared
                    if expect["uid"] is not None and self.index not in expect["seen"]:
                        for resource in response.resources:
                            if resource.name != expect["uid"]:
                                continue
                            message = workload_pb2.Address()
                            resource.resource.Unpack(message)
                            workload = address_from_proto(message)
                            if workload.labels.get(LABEL) == expect["value"]:  # type: ignore[union-attr]
                                expect["on_seen"](self.index)
                    if expect["count"] and len(self.names) >= expect["count"]:
                        expect["on_count"](self.index)
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=response.type_url, response_nonce=response.nonce
                    )
                )


async def subscribers(port: int, first: int, count: int) -> None:
    import grpc  # noqa: F401

    shared: dict[str, Any] = {"uid": None, "value": None, "seen": {}, "count": 0, "full": {}}
    done = asyncio.Event()

    def on_seen(index: int) -> None:
        shared["seen"].setdefault(index, time.perf_counter())
        if len(shared["seen"]) == count:
            done.set()

    def on_count(index: int) -> None:
        shared["full"].setdefault(index, time.perf_counter())
        if len(shared["full"]) == count:
            done.set()

    shared["on_seen"], shared["on_count"] = on_seen, on_count
    clients = [Subscriber(port, f"node-{i:03d}", shared, i) for i in range(first, first + count)]
    for client in clients:
        client.start()
    async with asyncio.timeout(60):
        await asyncio.gather(*(c.started.wait() for c in clients))
    _say("READY")
    for _ in range(100_000):
        line = (await _readline()).split()
        if not line or line[0] == "quit":
            break
        done.clear()
        if line[0] == "count":
            shared.update(count=int(line[1]), full={})
            for c in clients:
                if len(c.names) >= shared["count"]:
                    on_count(c.index)
            _say("ARMED")
            try:
                async with asyncio.timeout(SYNC_TIMEOUT):
                    await done.wait()
                _say("FULL", max(shared["full"].values()), rss_mb()[0])
            except TimeoutError:
                _say("TIMEOUT", min(len(c.names) for c in clients))
            shared["count"] = 0
        elif line[0] == "expect":
            shared.update(uid=line[1], value=line[2], seen={})
            _say("ARMED")
            try:
                async with asyncio.timeout(CHANGE_TIMEOUT):
                    await done.wait()
                _say("SEEN", max(shared["seen"].values()))
            except TimeoutError:
                _say("TIMEOUT", len(shared["seen"]))
            shared["uid"] = None
    for client in clients:
        await client.close()


# -- the baseline: a bare watcher ------------------------------------------------------


async def watcher(kubeconfig: str) -> None:
    """List + watch pods, decode each event, keep (ip, labels) per pod; nothing else."""
    from ambient.kube.kinds import POD

    client = client_for(kubeconfig)
    items, version = await client.list(POD.path())
    pods: dict[tuple[str, str], tuple[str | None, dict[str, str]]] = {}
    state: dict[str, Any] = {"count": 0, "uid": None, "value": None, "t": None, "with_ip": 0}
    event = asyncio.Event()

    def keep(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        before = pods.get(key)
        pods[key] = ((obj.get("status") or {}).get("podIP"), meta.get("labels") or {})
        state["with_ip"] += bool(pods[key][0]) - bool(before and before[0])
        if state["count"] and state["t"] is None and state["with_ip"] >= state["count"]:
            state["t"] = time.perf_counter()
            event.set()
        if state["uid"] == f"{key[0]}/{key[1]}" and pods[key][1].get(LABEL) == state["value"]:
            state["t"] = time.perf_counter()
            event.set()

    for item in items:
        keep(item)

    async def follow() -> None:
        nonlocal version
        while True:
            params = {
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "600",
            }
            async for ev in client.watch(POD.path(), params, read_timeout=700):
                obj = ev["object"]
                version = obj["metadata"]["resourceVersion"]
                if ev["type"] in ("ADDED", "MODIFIED"):
                    keep(obj)

    task = asyncio.ensure_future(follow())
    _say("READY")
    for _ in range(100_000):
        line = (await _readline()).split()
        if not line or line[0] == "quit":
            break
        event.clear()
        state["t"] = None
        if line[0] == "count":
            state["count"] = int(line[1])
            if state["with_ip"] >= state["count"]:
                state["t"] = time.perf_counter()
                event.set()
            _say("ARMED")
            async with asyncio.timeout(SYNC_TIMEOUT):
                await event.wait()
            state["count"] = 0
            _say("FULL", state["t"], rss_mb()[0])
        elif line[0] == "expect":
            state.update(uid=line[1], value=line[2])
            _say("ARMED")
            try:
                async with asyncio.timeout(CHANGE_TIMEOUT):
                    await event.wait()
                _say("SEEN", state["t"])
            except TimeoutError:
                _say("TIMEOUT", 0)
            state["uid"] = None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.close()
