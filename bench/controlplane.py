"""Control-plane benchmark: a 10,000-workload mesh pushed to 100 ztunnels over real gRPC.

    .venv/bin/python bench/controlplane.py [--scale 1.0] [--mode deployment|pod]
        [--subscribers 100] [--client-procs 2] [--changes 30]

The mesh (at scale 1.0): 100 namespaces x 10 Deployments x 10 replicas = 10,000
pods on 100 nodes, one Service per Deployment (1,000), 500 AuthorizationPolicies
(per namespace: 2 namespace-wide, 3 selector-scoped). ``--mode pod`` declares the
10,000 Pods directly with an explicit ``status.podIP`` (and Services with an explicit
``clusterIP``), so the allocator has nothing to choose; ``deployment`` lets it
allocate every address.

Processes: the control plane (``ControlPlane`` + ``XdsServer``, plaintext gRPC on
127.0.0.1, port 0) runs alone in a child, so its RSS and CPU are its own; the
subscribers (``XdsClient`` into a ``ProxyState`` each) are split across
``--client-procs`` further children; this process only orchestrates, over their
stdin/stdout. Times cross processes on ``time.perf_counter`` (CLOCK_MONOTONIC).

Figures: index build (config -> snapshot), initial full sync of every subscriber
(from "start" to the last ``synced``), one changed pod (a label set with
``plane.label`` in the control plane) until it is visible in every subscriber's
``ProxyState`` (p50/p99 over ``--changes``), control-plane RSS after the sync.
Baseline, same run: the same figures with in-process subscriptions
(``ControlPlane.subscribe`` + ``ProxyState.apply``, no gRPC) in one fresh process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

LABEL = "bench-rev"
SYNC_TIMEOUT = 150.0  # seconds, per phase
CHANGE_TIMEOUT = 10.0  # seconds, per change
GOALS = {"sync_s": 3.0, "change_p99_ms": 200.0, "rss_mb": 400.0}


# -- the mesh ------------------------------------------------------------------------


def mesh_yaml(scale: float, mode: str, nodes: int) -> str:
    """The benchmark's configuration as YAML text (see the module docstring)."""
    namespaces = max(1, round(100 * scale))
    docs: list[str] = []
    pod_index = 0
    svc_index = 0
    for n in range(namespaces):
        ns = f"ns-{n:03d}"
        docs.append(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
            "  labels: {istio.io/dataplane-mode: ambient}\n"
        )
        for d in range(10):
            app = f"app-{d}"
            node = f"node-{(n * 10 + d) % nodes:03d}"
            docs.append(
                f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {app}, namespace: {ns}}}\n"
            )
            container = "[{name: app, image: app, command: [sleep, infinity], ports: [{containerPort: 8080, name: http}]}]\n"
            if mode == "deployment":
                docs.append(
                    "apiVersion: apps/v1\nkind: Deployment\n"
                    f"metadata: {{name: {app}, namespace: {ns}}}\n"
                    "spec:\n  replicas: 10\n"
                    f"  selector: {{matchLabels: {{app: {app}}}}}\n"
                    "  template:\n"
                    f"    metadata: {{labels: {{app: {app}, version: v1}}}}\n"
                    "    spec:\n"
                    f"      serviceAccountName: {app}\n      nodeName: {node}\n"
                    "      containers: " + container
                )
            else:
                for r in range(10):
                    ip = f"10.1.{pod_index // 250}.{pod_index % 250 + 1}"
                    pod_index += 1
                    docs.append(
                        "apiVersion: v1\nkind: Pod\n"
                        f"metadata: {{name: {app}-{r}, namespace: {ns}, "
                        f"labels: {{app: {app}, version: v1}}}}\n"
                        f"spec:\n  serviceAccountName: {app}\n  nodeName: {node}\n"
                        "  containers: " + container + f"status: {{podIP: {ip}, phase: Running}}\n"
                    )
            cluster_ip = ""
            if mode == "pod":
                cluster_ip = f"  clusterIP: 10.96.{svc_index // 250}.{svc_index % 250 + 1}\n"
            svc_index += 1
            docs.append(
                "apiVersion: v1\nkind: Service\n"
                f"metadata: {{name: {app}, namespace: {ns}}}\n"
                f"spec:\n{cluster_ip}  selector: {{app: {app}}}\n"
                "  ports: [{name: http, port: 80, targetPort: http}]\n"
            )
        peer = f"ns-{(n + 1) % namespaces:03d}"
        for p in range(5):
            selector = f"  selector: {{matchLabels: {{app: app-{p}}}}}\n" if p >= 2 else ""
            action = "DENY" if p == 1 else "ALLOW"
            docs.append(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                f"metadata: {{name: policy-{p}, namespace: {ns}}}\n"
                f"spec:\n{selector}  action: {action}\n  rules:\n"
                f"  - from: [{{source: {{namespaces: [{ns}, {peer}]}}}}]\n"
                f'    to: [{{operation: {{ports: ["8080"]}}}}]\n'
            )
    return "---\n".join(docs)


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def build_plane(config_path: Path) -> tuple[Any, dict[str, float]]:
    """Load the YAML and build the ``ControlPlane``; returns it and the times."""
    from ambient.config import load_text
    from ambient.controlplane import ControlPlane
    from ambient.identity.ca import CertificateAuthority

    text = config_path.read_text()
    ca = CertificateAuthority.generate()
    t0 = time.perf_counter()
    config = load_text(text, config_path.name)
    t1 = time.perf_counter()
    plane = ControlPlane(ca, config=config)
    t2 = time.perf_counter()
    return plane, {"load_s": t1 - t0, "index_s": t2 - t1}


def change_targets(plane: Any, count: int) -> list[tuple[str, str, str]]:
    """(uid, namespace, pod name) of ``count`` pods spread over the mesh."""
    uids = sorted(u for u, w in plane.snapshot.workloads.items() if w.local)
    step = max(1, len(uids) // count)
    return [
        (u, plane.snapshot.workloads[u].namespace, plane.snapshot.workloads[u].name)
        for u in uids[::step][:count]
    ]


async def _readline() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _say(*words: object) -> None:
    print(*words, flush=True)


# -- the control plane process -------------------------------------------------------


async def serve(config_path: Path, changes: int) -> None:
    from ambient.xds.server import XdsServer

    plane, times = build_plane(config_path)
    # Long-lived objects of the loaded mesh leave the collector's generations, so a full
    # collection does not walk them during pushes (what a long-running control plane
    # does after loading; without it a gen-2 pass stalls a push by ~1 s at full scale).
    gc.collect()
    gc.freeze()
    rss_built = rss_mb()[0]
    server = XdsServer(plane, credentials=None)
    t0 = time.perf_counter()
    port = await server.start("127.0.0.1:0")  # encodes the mesh once for every stream
    times["encode_s"] = time.perf_counter() - t0
    targets = change_targets(plane, changes)
    _say(
        "READY",
        port,
        json.dumps({**times, "rss_built_mb": rss_built, "targets": targets}, separators=(",", ":")),
    )
    for _ in range(10_000):  # bounded: one command a line, until "quit" or EOF
        line = (await _readline()).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "label":
            _, ns, name, value = line
            t0 = time.perf_counter()
            plane.label("Pod", ns, name, LABEL, value)
            _say("LABELLED", time.perf_counter() - t0)
        elif line[0] == "stats":
            rss, hwm = rss_mb()
            _say(
                "STATS",
                json.dumps({"rss_mb": rss, "hwm_mb": hwm, "cpu_s": cpu_s()}, separators=(",", ":")),
            )
    await server.stop(0.5)


# -- a subscriber process ------------------------------------------------------------


class RawSubscriber:
    """A simulated ztunnel: one delta ADS stream, both wildcard subscriptions, every
    response ACKed by nonce, as ztunnel does; it keeps the resources' versions (the
    ``initial_resource_versions`` it would send on reconnect) and decodes only the
    workload a change is expected on, so the figures are the control plane's."""

    METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

    def __init__(self, port: int, node: str, expect: dict[str, Any], index: int) -> None:
        self.port, self.node, self.expect, self.index = port, node, expect, index
        self.synced = asyncio.Event()
        self.received: dict[str, int] = {}  # resources received, by type
        self.on_seen: Any = None
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
                self.received[response.type_url] = self.received.get(response.type_url, 0) + len(
                    response.resources
                )
                uid = self.expect["uid"]
                if uid is None or self.index in self.expect["seen"] or len(response.resources) > 64:
                    pass  # not a change being watched for (a full state): just ACK it
                else:
                    for resource in response.resources:
                        if resource.name != uid:
                            continue
                        message = workload_pb2.Address()
                        resource.resource.Unpack(message)
                        workload = address_from_proto(message)
                        if workload.labels.get(LABEL) == self.expect["value"]:  # type: ignore[union-attr]
                            self.on_seen(self.index)
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=response.type_url, response_nonce=response.nonce
                    )
                )
                if len(self.received) == 2:
                    self.synced.set()


async def subscribers(port: int, first: int, count: int, raw: bool) -> None:
    import grpc  # noqa: F401  (imported before READY: imports are not part of the sync)
    from google.protobuf import struct_pb2  # noqa: F401

    from ambient.state.proxy import ProxyState
    from ambient.xds.client import XdsClient
    from ambient.xds.codec import address_from_proto  # noqa: F401

    expect: dict[str, Any] = {"uid": None, "value": None, "seen": {}}
    clients: list[XdsClient] = []
    all_seen = asyncio.Event()

    def watch(index: int) -> Any:
        def on_change(state: ProxyState) -> None:
            uid = expect["uid"]
            if uid is None or index in expect["seen"]:
                return
            w = state.workloads.get(uid)
            if w is not None and w.labels.get(LABEL) == expect["value"]:
                expect["seen"][index] = time.perf_counter()
                if len(expect["seen"]) == len(clients):
                    all_seen.set()

        return on_change

    def seen_by(index: int) -> None:
        expect["seen"][index] = time.perf_counter()
        if len(expect["seen"]) == len(clients):
            all_seen.set()

    _say("READY")
    for _ in range(10_000):
        line = (await _readline()).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "start":
            for i in range(first, first + count):
                if raw:
                    sub = RawSubscriber(port, f"node-{i:03d}", expect, i)
                    sub.on_seen = seen_by
                    clients.append(sub)  # type: ignore[arg-type]
                    continue
                state = ProxyState(f"node-{i:03d}")
                state.on_change(watch(i))
                clients.append(XdsClient(f"127.0.0.1:{port}", state.node, state, credentials=None))
            for client in clients:
                client.start()
            async with asyncio.timeout(SYNC_TIMEOUT):
                await asyncio.gather(*(c.synced.wait() for c in clients))
            _say("SYNCED", time.perf_counter(), rss_mb()[0])
        elif line[0] == "expect":
            _, uid, value = line
            all_seen.clear()
            expect.update(uid=uid, value=value, seen={})
            _say("ARMED")
            seen: dict[int, float] = expect["seen"]
            try:
                async with asyncio.timeout(CHANGE_TIMEOUT):
                    await all_seen.wait()
            except TimeoutError:
                pass
            if len(seen) < len(clients):
                _say("TIMEOUT", len(seen))
            else:
                _say("SEEN", max(seen.values()))
    for client in clients:
        await client.close()


# -- the in-process baseline ---------------------------------------------------------


async def inprocess(config_path: Path, count: int, changes: int) -> None:
    from ambient.state.proxy import ProxyState

    plane, times = build_plane(config_path)
    rss_built = rss_mb()[0]
    targets = change_targets(plane, changes)
    expect: dict[str, Any] = {"uid": None, "value": None, "seen": {}}
    states = [ProxyState(f"node-{i:03d}") for i in range(count)]
    synced = asyncio.Event()
    all_seen = asyncio.Event()
    applied = [0]

    async def feed(index: int, state: ProxyState) -> None:
        subscription = plane.subscribe(state.node)
        try:
            async for delta in subscription:
                state.apply(
                    delta.upserted, delta.removed, delta.policies_upserted, delta.policies_removed
                )
                uid = expect["uid"]
                if uid is not None and index not in expect["seen"]:
                    w = state.workloads.get(uid)
                    if w is not None and w.labels.get(LABEL) == expect["value"]:
                        expect["seen"][index] = time.perf_counter()
                        if len(expect["seen"]) == count:
                            all_seen.set()
                if uid is None:
                    applied[0] += 1
                    if applied[0] == count:
                        synced.set()
        finally:
            subscription.close()

    t0 = time.perf_counter()
    cpu0 = cpu_s()
    tasks = [asyncio.ensure_future(feed(i, s)) for i, s in enumerate(states)]
    async with asyncio.timeout(SYNC_TIMEOUT):
        await synced.wait()
    sync_s = time.perf_counter() - t0
    sync_cpu = cpu_s() - cpu0
    rss_synced = rss_mb()[0]
    latencies: list[float] = []
    label_s: list[float] = []
    for k, (uid, ns, name) in enumerate(targets):
        all_seen.clear()
        expect.update(uid=uid, value=f"v{k}", seen={})
        t0 = time.perf_counter()
        plane.label("Pod", ns, name, LABEL, f"v{k}")
        label_s.append(time.perf_counter() - t0)
        try:
            async with asyncio.timeout(CHANGE_TIMEOUT):
                await all_seen.wait()
        except TimeoutError:
            pass
        if len(expect["seen"]) < count:
            raise RuntimeError(f"change {k}: {len(expect['seen'])}/{count} states saw it")
        latencies.append(max(expect["seen"].values()) - t0)
    plane.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    _say(
        "RESULT",
        json.dumps(
            {
                **times,
                "rss_built_mb": rss_built,
                "sync_s": sync_s,
                "sync_cpu_s": sync_cpu,
                "rss_synced_mb": rss_synced,
                "latencies": latencies,
                "label_s": label_s,
                "workloads": len(plane.snapshot.workloads),
                "services": len(plane.snapshot.services),
                "policies": len(plane.snapshot.authorizations),
            }
        ),
    )


# -- orchestration -------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _expect(proc: subprocess.Popen[str], word: str) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline().split(maxsplit=2)
    if not line or line[0] != word:
        raise RuntimeError(f"expected {word}, got {line!r}")
    return line[1:]


def _expect_any(proc: subprocess.Popen[str], words: tuple[str, ...]) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline().split(maxsplit=2)
    if not line or line[0] not in words:
        raise RuntimeError(f"expected one of {words}, got {line!r}")
    return line


def over_grpc(
    config_path: Path, subscribers_n: int, procs: int, changes: int, clients: str
) -> dict[str, Any]:
    control = _spawn("--serve", str(config_path), "--changes", str(changes))
    workers: list[subprocess.Popen[str]] = []
    try:
        port_s, info_s = _expect(control, "READY")
        info = json.loads(info_s)
        share = [
            subscribers_n // procs + (1 if i < subscribers_n % procs else 0) for i in range(procs)
        ]
        first = 0
        for n in share:
            workers.append(
                _spawn("--subscribers-of", port_s, str(first), str(n), "--clients", clients)
            )
            first += n
        for w in workers:
            _expect(w, "READY")
        _send(control, "stats")
        before = json.loads(_expect(control, "STATS")[0])
        t0 = time.perf_counter()
        for w in workers:
            _send(w, "start")
        done = [_expect(w, "SYNCED") for w in workers]
        sync_s = max(float(d[0]) for d in done) - t0
        client_rss = [float(d[1]) for d in done]
        _send(control, "stats")
        after = json.loads(_expect(control, "STATS")[0])
        latencies: list[float] = []
        label_s: list[float] = []
        for k, (uid, ns, name) in enumerate(info["targets"]):
            for w in workers:
                _send(w, f"expect {uid} v{k}")
            for w in workers:
                _expect(w, "ARMED")
            t0 = time.perf_counter()
            _send(control, f"label {ns} {name} v{k}")
            label_s.append(float(_expect(control, "LABELLED")[0]))
            seen = []
            for w in workers:
                answer = _expect_any(w, ("SEEN", "TIMEOUT"))
                if answer[0] == "TIMEOUT":
                    raise RuntimeError(f"change {k}: not seen within {CHANGE_TIMEOUT} s")
                seen.append(float(answer[1]))
            latencies.append(max(seen) - t0)
        _send(control, "stats")
        end = json.loads(_expect(control, "STATS")[0])
        return {
            **{k: v for k, v in info.items() if k != "targets"},
            "sync_s": sync_s,
            "sync_cpu_s": after["cpu_s"] - before["cpu_s"],
            "rss_synced_mb": after["rss_mb"],
            "hwm_mb": end["hwm_mb"],
            "rss_end_mb": end["rss_mb"],
            "client_rss_mb": client_rss,
            "latencies": latencies,
            "label_s": label_s,
        }
    finally:
        for proc in (*workers, control):
            if proc.poll() is None:
                try:
                    _send(proc, "quit")
                    proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait(timeout=10)


def baseline(config_path: Path, subscribers_n: int, changes: int) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--inprocess",
            str(config_path),
            "--subscribers",
            str(subscribers_n),
            "--changes",
            str(changes),
        ],
        stdout=subprocess.PIPE,
        text=True,
        timeout=2 * SYNC_TIMEOUT,
        check=True,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.split(maxsplit=1)[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(grpc_r: dict[str, Any], base: dict[str, Any]) -> None:
    def row(name: str, ours: float, theirs: float | None, goal: str, fmt: str = "{:,.2f}") -> None:
        b = fmt.format(theirs) if theirs is not None else ""
        ratio = f"{ours / theirs:.2f}x" if theirs else ""
        print(f"| {name} | {fmt.format(ours)} | {b} | {ratio} | {goal} |")

    g_p50 = _pct(grpc_r["latencies"], 0.5) * 1e3
    g_p99 = _pct(grpc_r["latencies"], 0.99) * 1e3
    b_p50 = _pct(base["latencies"], 0.5) * 1e3
    b_p99 = _pct(base["latencies"], 0.99) * 1e3
    print("| measure | over gRPC | in-process | gRPC/in-process | goal |")
    print("| --- | ---: | ---: | ---: | --- |")
    row("load YAML -> ConfigSet (s)", grpc_r["load_s"], base["load_s"], "")
    row("build index, config -> snapshot (s)", grpc_r["index_s"], base["index_s"], "")
    row("encode the mesh for xDS, once (s)", grpc_r["encode_s"], None, "")
    row("initial sync, all subscribers (s)", grpc_r["sync_s"], base["sync_s"], "≤ 3 s")
    row("control-plane CPU during the sync (s)", grpc_r["sync_cpu_s"], base["sync_cpu_s"], "")
    row("one changed pod to all, p50 (ms)", g_p50, b_p50, "", "{:,.0f}")
    row("one changed pod to all, p99 (ms)", g_p99, b_p99, "≤ 200 ms", "{:,.0f}")
    row(
        "of which plane.label (rebuild + diff), p50 (ms)",
        statistics.median(grpc_r["label_s"]) * 1e3,
        statistics.median(base["label_s"]) * 1e3,
        "",
        "{:,.0f}",
    )
    row(
        "control-plane RSS after build (MB)",
        grpc_r["rss_built_mb"],
        base["rss_built_mb"],
        "",
        "{:,.0f}",
    )
    row(
        "control-plane RSS after sync (MB)",
        grpc_r["rss_synced_mb"],
        base["rss_synced_mb"],
        "≤ 400 MB",
        "{:,.0f}",
    )
    print()
    print(
        f"gRPC control plane: peak RSS {grpc_r['hwm_mb']:,.0f} MB, {grpc_r['rss_end_mb']:,.0f} MB after"
        f" the changes; subscriber processes' RSS: {', '.join(f'{r:,.0f}' for r in grpc_r['client_rss_mb'])} MB."
        " In-process RSS includes its ProxyStates."
    )
    met = {
        "initial sync": grpc_r["sync_s"] <= GOALS["sync_s"],
        "change p99": g_p99 <= GOALS["change_p99_ms"],
        "RSS": grpc_r["rss_synced_mb"] <= GOALS["rss_mb"],
    }
    print(
        "goals (over gRPC): " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--mode", choices=("deployment", "pod"), default="deployment")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--clients",
        choices=("raw", "full"),
        default="raw",
        help="raw: simulated ztunnels (ADS streams that ACK and keep versions; default); "
        "full: XdsClient into a ProxyState each (adds the Python data plane's decode/apply)",
    )
    parser.add_argument(
        "--source",
        choices=("folder", "kubernetes"),
        default="folder",
        help="kubernetes: objects created through a real API server, watched by the "
        "control plane (bench/controlplane_kube.py)",
    )
    parser.add_argument("--kubeconfig", type=Path, help="--source kubernetes: this cluster")
    parser.add_argument("--concurrency", type=int, default=32, help="--source kubernetes")
    parser.add_argument("--kube-serve", help=argparse.SUPPRESS)
    parser.add_argument("--kube-subscribers", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--kube-watch", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inprocess", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--subscribers-of", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.source == "kubernetes":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import controlplane_kube

        controlplane_kube.main(args)
        return
    if args.serve:
        asyncio.run(serve(args.serve, args.changes))
        return
    if args.subscribers_of:
        asyncio.run(subscribers(*args.subscribers_of, raw=args.clients == "raw"))
        return
    if args.inprocess:
        asyncio.run(inprocess(args.inprocess, args.subscribers, args.changes))
        return
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp:
        config_path = Path(tmp) / "mesh.yaml"
        config_path.write_text(mesh_yaml(args.scale, args.mode, args.nodes))
        base = (
            {
                "load_s": 0,
                "index_s": 0,
                "sync_s": 0,
                "sync_cpu_s": 0,
                "latencies": [0],
                "label_s": [0],
                "rss_built_mb": 0,
                "rss_synced_mb": 0,
            }
            if args.skip_baseline
            else baseline(config_path, args.subscribers, args.changes)
        )
        if not args.skip_baseline:
            print(
                f"mesh: {base['workloads']:,} workloads, {base['services']:,} services,"
                f" {base['policies']:,} AuthorizationPolicies; {args.subscribers} subscribers"
                f" ({args.client_procs} client processes, {args.clients} clients); mode {args.mode},"
                f" scale {args.scale};"
                f" {args.changes} changes",
                flush=True,
            )
        grpc_r = over_grpc(
            config_path, args.subscribers, args.client_procs, args.changes, args.clients
        )
        print(json.dumps({"grpc": grpc_r, "inprocess": base}), file=sys.stderr)
        report(grpc_r, base)


if __name__ == "__main__":
    main()
