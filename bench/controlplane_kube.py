"""Control-plane benchmark with a Kubernetes cluster as the source (``bench/controlplane.py
--source kubernetes``): 10,000 pods and 1,000 Services created through a real API server,
100 subscribers.

    .venv/bin/python bench/controlplane.py --source kubernetes [--scale 1.0]
        [--kubeconfig K] [--subscribers 100] [--client-procs 2] [--changes 30]
        [--concurrency 32]

Without ``--kubeconfig`` a dev cluster is started in a temporary folder (and removed),
``ambient install`` applied. The mesh (scale 1.0): 100 namespaces (enrolled) x 10
Services x 10 pods = 10,000 pods on 100 Nodes, 1,000 Services. Pods are created with
``nodeName`` set and their status (podIP, hostIP, Ready) written through ``/status``
directly: there is no kubelet (the Nodes are registered and their Leases renewed so the
pod garbage collector keeps the pods).

Processes: the control plane (``KubeController`` + ``ControlPlane(cluster=True)`` +
``XdsServer``, plaintext gRPC; admin credentials) alone in a child; the subscribers
(simulated ztunnels: one delta ADS stream each, every response ACKed, resource names
kept) in ``--client-procs`` children; the baseline, a bare watcher of pods (list +
watch, JSON decoded, nothing else), in another; the creation runs in this process.

Figures: the API server's own cost (wall time of the creates and status writes at the
given concurrency, CPU of kube-apiserver and etcd meanwhile); time from the last
status write until every subscriber holds every workload and service, and until the
bare watcher has seen every pod's IP (the baseline: what watching alone costs);
control-plane CPU during the creation; one pod relabelled through the API server until
all subscribers (and the bare watcher) see it, p50/p99; control-plane RSS.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

GOALS = {"sync_s": 10.0, "change_p99_ms": 200.0, "rss_mb": 400.0}


from kube_peers import (  # noqa: E402 - after sys.path is set
    CHANGE_TIMEOUT,
    LABEL,
    client_for,
    cpu_of,
    serve,
    subscribers,
    watcher,
)

# -- the orchestration -------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "controlplane.py"), "--source", "kubernetes", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


async def _expect(proc: subprocess.Popen[str], *words: str) -> list[str]:
    assert proc.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
    parts = line.split(maxsplit=2)
    if not parts or parts[0] not in words:
        raise RuntimeError(f"expected {words}, got {line!r}")
    return parts


class Mesh:
    """The benchmark's objects, as the API server takes them."""

    def __init__(self, scale: float, nodes: int) -> None:
        self.namespaces = [f"bench-{n:03d}" for n in range(max(1, round(100 * scale)))]
        self.nodes = [f"node-{i:03d}" for i in range(nodes)]
        self.services: list[dict[str, Any]] = []
        self.pods: list[tuple[dict[str, Any], str, str]] = []  # (body, ip, node)
        index = 0
        for n, ns in enumerate(self.namespaces):
            for d in range(10):
                app = f"app-{d}"
                self.services.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": app, "namespace": ns},
                        "spec": {
                            "selector": {"app": app},
                            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                        },
                    }
                )
                for r in range(10):
                    node = self.nodes[(n * 10 + d) % len(self.nodes)]
                    ip = f"10.1.{index // 250}.{index % 250 + 1}"
                    index += 1
                    body = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": f"{app}-{r}",
                            "namespace": ns,
                            "labels": {"app": app, "version": "v1"},
                        },
                        "spec": {
                            "nodeName": node,
                            "containers": [
                                {
                                    "name": "app",
                                    "image": "app",
                                    "ports": [{"containerPort": 8080, "name": "http"}],
                                }
                            ],
                        },
                    }
                    self.pods.append((body, ip, node))

    def node_ip(self, node: str) -> str:
        i = self.nodes.index(node)
        return f"192.168.{i // 250}.{i % 250 + 1}"


async def _bounded(limit: int, jobs: list[Any]) -> float:
    """Run coroutine factories ``jobs`` with at most ``limit`` at once; the wall time."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Any) -> None:
        async with semaphore:
            await job()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(job) for job in jobs))
    return time.perf_counter() - t0


async def _create_namespaces(client: Any, mesh: Mesh) -> None:
    """The mesh's namespaces (enrolled), once their default ServiceAccounts exist: pods
    need them, and the controller-manager makes them."""
    from ambient.kube.kinds import NAMESPACE, SERVICE_ACCOUNT

    for ns in mesh.namespaces:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"istio.io/dataplane-mode": "ambient"}},
        }
        await client.create(NAMESPACE.path(), body)
    deadline = time.monotonic() + 120
    while True:
        accounts, _ = await client.list(
            SERVICE_ACCOUNT.path(), {"fieldSelector": "metadata.name=default"}
        )
        if {a["metadata"]["namespace"] for a in accounts} >= set(mesh.namespaces):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("default ServiceAccounts did not appear")
        await asyncio.sleep(0.5)


async def drive(kubeconfig: str, args: Any, pids: dict[str, int]) -> dict[str, Any]:
    from tests.kube.kubelet import KubeletStandIn

    from ambient.kube.kinds import POD, SERVICE

    client = client_for(kubeconfig)
    mesh = Mesh(args.scale, args.nodes)
    kubelet = KubeletStandIn(client)
    for node in mesh.nodes:
        await kubelet.register(node, mesh.node_ip(node))
    kubelet.heartbeats()
    await _create_namespaces(client, mesh)
    existing, _ = await client.list(SERVICE.path())

    control = _spawn("--kube-serve", kubeconfig)
    port = (await _expect(control, "READY"))[1]
    share = [
        args.subscribers // args.client_procs
        + (1 if i < args.subscribers % args.client_procs else 0)
        for i in range(args.client_procs)
    ]
    workers, first = [], 0
    for n in share:
        workers.append(_spawn("--kube-subscribers", port, str(first), str(n)))
        first += n
    bare = _spawn("--kube-watch", kubeconfig)
    try:
        for proc in (*workers, bare):
            await _expect(proc, "READY")
        expected = len(mesh.pods) + len(mesh.services) + len(existing)
        for w in workers:
            _send(w, f"count {expected}")
        _send(bare, f"count {len(mesh.pods)}")
        for proc in (*workers, bare):
            await _expect(proc, "ARMED")
        _send(control, "stats")
        before = json.loads((await _expect(control, "STATS"))[1])
        server_cpu = {name: cpu_of(pid) for name, pid in pids.items()}
        t_start = time.perf_counter()

        def create_service(body: dict[str, Any]) -> Any:
            return lambda: client.create(SERVICE.path(body["metadata"]["namespace"]), body)

        def create_pod(body: dict[str, Any]) -> Any:
            return lambda: client.create(POD.path(body["metadata"]["namespace"]), body)

        def run_pod(body: dict[str, Any], ip: str, node: str) -> Any:
            meta = body["metadata"]
            return lambda: kubelet.set_status(
                meta["namespace"], meta["name"], ip, ready=True, host=mesh.node_ip(node)
            )

        services_s = await _bounded(args.concurrency, [create_service(b) for b in mesh.services])
        pods_s = await _bounded(args.concurrency, [create_pod(b) for b, _, _ in mesh.pods])
        status_s = await _bounded(args.concurrency, [run_pod(*p) for p in mesh.pods])
        t_last = time.perf_counter()
        server_cpu = {name: cpu_of(pid) - server_cpu[name] for name, pid in pids.items()}
        full = [await _expect(w, "FULL", "TIMEOUT") for w in workers]
        if any(f[0] == "TIMEOUT" for f in full):
            raise RuntimeError(f"subscribers did not sync: {full}")
        t_full = max(float(f[1]) for f in full)
        bare_full = float((await _expect(bare, "FULL"))[1])
        _send(control, "stats")
        synced = json.loads((await _expect(control, "STATS"))[1])
        latencies, bare_latencies = [], []
        step = max(1, len(mesh.pods) // max(1, args.changes))
        for k, (body, _, _) in enumerate(mesh.pods[::step][: args.changes]):
            meta = body["metadata"]
            uid = f"Kubernetes//Pod/{meta['namespace']}/{meta['name']}"
            for w in workers:
                _send(w, f"expect {uid} v{k}")
            _send(bare, f"expect {meta['namespace']}/{meta['name']} v{k}")
            for proc in (*workers, bare):
                await _expect(proc, "ARMED")
            t0 = time.perf_counter()
            await client.patch(
                POD.path(meta["namespace"], meta["name"]),
                {"metadata": {"labels": {LABEL: f"v{k}"}}},
            )
            seen = [await _expect(w, "SEEN", "TIMEOUT") for w in workers]
            if any(s[0] == "TIMEOUT" for s in seen):
                raise RuntimeError(
                    f"change {k}: not seen by every subscriber within {CHANGE_TIMEOUT} s"
                )
            latencies.append(max(float(s[1]) for s in seen) - t0)
            answer = await _expect(bare, "SEEN", "TIMEOUT")
            if answer[0] == "SEEN":
                bare_latencies.append(float(answer[1]) - t0)
        _send(control, "stats")
        end = json.loads((await _expect(control, "STATS"))[1])
        return {
            "pods": len(mesh.pods),
            "services": len(mesh.services),
            "subscribers": args.subscribers,
            "create_services_s": services_s,
            "create_pods_s": pods_s,
            "write_status_s": status_s,
            "server_cpu_s": server_cpu,
            "sync_after_last_s": t_full - t_last,
            "sync_from_start_s": t_full - t_start,
            "bare_after_last_s": bare_full - t_last,
            "controlplane_cpu_s": synced["cpu_s"] - before["cpu_s"],
            "workloads": synced["workloads"],
            "index_services": synced["services"],
            "batches": synced["batches"] - before["batches"],
            "full_builds": synced["full_builds"],
            "rss_synced_mb": synced["rss_mb"],
            "hwm_mb": end["hwm_mb"],
            "latencies": latencies,
            "bare_latencies": bare_latencies,
            "client_rss_mb": [float(f[2]) for f in full],
        }
    finally:
        await kubelet.close()
        for proc in (*workers, bare, control):
            if proc.poll() is None:
                try:
                    _send(proc, "quit")
                    proc.wait(timeout=15)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait(timeout=10)
        await client.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")
    )


def report(r: dict[str, Any], command: str) -> None:
    p50, p99 = _pct(r["latencies"], 0.5) * 1e3, _pct(r["latencies"], 0.99) * 1e3
    b50, b99 = _pct(r["bare_latencies"], 0.5) * 1e3, _pct(r["bare_latencies"], 0.99) * 1e3
    cpu = r["server_cpu_s"]
    print(f"command: {command}")
    print(
        f"mesh: {r['pods']:,} pods, {r['services']:,} Services through the API server; "
        f"{r['subscribers']} subscribers; index: {r['workloads']:,} workloads, {r['index_services']:,} services"
    )
    print()
    print("| measure | control plane | bare watcher (baseline) | ratio | goal |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(
        f"| API server: create {r['services']:,} Services (s) | {r['create_services_s']:.1f} | | | |"
    )
    print(f"| API server: create {r['pods']:,} pods (s) | {r['create_pods_s']:.1f} | | | |")
    print(f"| API server: write {r['pods']:,} pod statuses (s) | {r['write_status_s']:.1f} | | | |")
    cpus = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items())) or "n/a"
    print(f"| API server and etcd CPU during the creates (s) | {cpus} | | | |")
    ratio = (
        r["sync_after_last_s"] / r["bare_after_last_s"]
        if r["bare_after_last_s"] > 0
        else float("nan")
    )
    print(
        f"| last create to all in sync (s) | **{r['sync_after_last_s']:.2f}** | {r['bare_after_last_s']:.2f} "
        f"| {ratio:.1f}x | ≤ 10 s |"
    )
    print(f"| first create to all in sync (s) | {r['sync_from_start_s']:.1f} | | | |")
    print(f"| control-plane CPU, creates to sync (s) | {r['controlplane_cpu_s']:.1f} | | | |")
    print(f"| one pod relabel to all, p50 (ms) | {p50:,.0f} | {b50:,.0f} | {p50 / b50:.1f}x | |")
    print(
        f"| one pod relabel to all, p99 (ms) | **{p99:,.0f}** | {b99:,.0f} | {p99 / b99:.1f}x | ≤ 200 ms |"
    )
    print(f"| control-plane RSS after sync (MB) | **{r['rss_synced_mb']:,.0f}** | | | ≤ 400 MB |")
    print()
    print(
        f"control plane: {r['batches']} batches during the creates, {r['full_builds']} full index builds, "
        f"peak RSS {r['hwm_mb']:,.0f} MB; subscriber processes' RSS "
        f"{', '.join(f'{x:,.0f}' for x in r['client_rss_mb'])} MB"
    )
    met = {
        "sync": r["sync_after_last_s"] <= GOALS["sync_s"],
        "change p99": p99 <= GOALS["change_p99_ms"],
        "RSS": r["rss_synced_mb"] <= GOALS["rss_mb"],
    }
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))


def main(args: Any) -> None:
    if args.kube_serve:
        asyncio.run(serve(args.kube_serve))
        return
    if args.kube_subscribers:
        port, first, count = args.kube_subscribers
        asyncio.run(subscribers(int(port), int(first), int(count)))
        return
    if args.kube_watch:
        asyncio.run(watcher(args.kube_watch))
        return
    command = "bench/controlplane.py " + " ".join(sys.argv[1:])
    folder = None
    cluster = None
    try:
        if args.kubeconfig is None:
            from ambient.devcluster import Options, up

            folder = Path(tempfile.mkdtemp(prefix="bench-kube-"))
            cluster = up(folder / "cluster", Options(tie_to_parent=True, progress=lambda m: None))
            kubeconfig = str(cluster.kubeconfig)
        else:
            kubeconfig = str(args.kubeconfig)
        done = subprocess.run(
            [sys.executable, "-m", "ambient", "install", "--kubeconfig", kubeconfig],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"ambient install failed: {done.stderr}")
        pids = {}
        if cluster is not None:
            pids = {
                p.name: p.pid for p in cluster.processes if p.name in ("kube-apiserver", "etcd")
            }
        result = asyncio.run(drive(kubeconfig, args, pids))
        print(json.dumps(result), file=sys.stderr)
        report(result, command)
    finally:
        if cluster is not None:
            cluster.down()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
