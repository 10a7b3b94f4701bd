"""Waypoint configuration over xDS: what an L7 edit costs, against a pod label change.

    .venv/bin/python bench/l7_xds.py [--services 1000] [--changes 30]

One namespace with ``--services`` Services, one Pod, one VirtualService and one
targetRef'd AuthorizationPolicy each (so 2 x services L7 objects). A real
``ControlPlane`` and ``XdsServer`` (plaintext gRPC on 127.0.0.1) and one real
``XdsClient`` with an ``L7Config``, as a ztunnel process that hosts a waypoint, all in
this process (one core's worth of work either way).

Figures, each p50/p99 over ``--changes``: the control plane's ``update`` for one
edited VirtualService (new weights), and the time until the client's ``L7Config`` has
applied it; baseline in the same run: ``plane.label`` on one pod, and the time until
the client's ``ProxyState`` has it. Also the initial sync (all three types) and the
size of one L7 push.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ambient.config import ConfigSet, load_text  # noqa: E402
from ambient.config.configset import Ref  # noqa: E402
from ambient.controlplane import ControlPlane  # noqa: E402
from ambient.identity import CertificateAuthority  # noqa: E402
from ambient.state.proxy import ProxyState  # noqa: E402
from ambient.waypoint.config import L7Config  # noqa: E402
from ambient.xds.client import XdsClient  # noqa: E402
from ambient.xds.server import XdsServer  # noqa: E402

NS = "bench"


def virtual_service(i: int, weight: int) -> str:
    host = f"svc-{i}.{NS}.svc.cluster.local"
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs-{i}, namespace: {NS}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - destination: {{host: {host}}}
      weight: {weight}
    - destination: {{host: {host}}}
      weight: {100 - weight}
"""


def mesh_yaml(services: int) -> str:
    docs = [
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n"
        "  labels: {istio.io/dataplane-mode: ambient}\n"
    ]
    for i in range(services):
        docs.append(f"""
apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: {NS}}}
spec:
  selector: {{app: svc-{i}}}
  ports: [{{name: http, port: 8080}}]
""")
        docs.append(f"""
apiVersion: v1
kind: Pod
metadata: {{name: pod-{i}, namespace: {NS}, labels: {{app: svc-{i}}}}}
spec:
  containers: [{{name: app, command: [sleep, infinity]}}]
""")
        docs.append(virtual_service(i, 50))
        docs.append(f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ap-{i}, namespace: {NS}}}
spec:
  targetRefs: [{{kind: Service, group: "", name: svc-{i}}}]
  rules: [{{from: [{{source: {{namespaces: [{NS}]}}}}]}}]
""")
    return "\n---\n".join(docs)


def with_edit(config: ConfigSet, i: int, weight: int) -> ConfigSet:
    edited = load_text(virtual_service(i, weight), "edit.yaml", check_refs=False)
    ref = Ref("VirtualService", NS, f"vs-{i}")
    return ConfigSet(
        {**config.objects, ref: edited.objects[ref]},
        {**config.origins, ref: edited.origins[ref]},
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(services: int, changes: int) -> None:
    config = load_text(mesh_yaml(services), "bench.yaml")
    plane = ControlPlane(CertificateAuthority.generate(), config=config)
    server = XdsServer(plane, credentials=None)
    port = await server.start("127.0.0.1:0")
    state, l7 = ProxyState("node-1"), L7Config()
    client = XdsClient(f"127.0.0.1:{port}", "node-1", state, credentials=None, l7=l7)
    started = time.perf_counter()
    client.start()
    await client.synced.wait()
    sync_s = time.perf_counter() - started
    l7_changed, state_changed = asyncio.Event(), asyncio.Event()
    l7.on_change(lambda _c: l7_changed.set())
    state.on_change(lambda _s: state_changed.set())

    edit_update, edit_total, label_update, label_total = [], [], [], []
    for n in range(changes):
        i = (n * 37) % services
        l7_changed.clear()
        t0 = time.perf_counter()
        config = with_edit(config, i, 10 + n % 80)
        delta = plane.update(config)
        t1 = time.perf_counter()
        await asyncio.wait_for(l7_changed.wait(), 10)
        t2 = time.perf_counter()
        assert [name for name, _ in delta.l7_upserted] == [f"VirtualService/{NS}/vs-{i}"]
        edit_update.append((t1 - t0) * 1000)
        edit_total.append((t2 - t0) * 1000)

        state_changed.clear()
        t0 = time.perf_counter()
        plane.label("Pod", NS, f"pod-{i}", "bench-rev", str(n))
        t1 = time.perf_counter()
        await asyncio.wait_for(state_changed.wait(), 10)
        t2 = time.perf_counter()
        label_update.append((t1 - t0) * 1000)
        label_total.append((t2 - t0) * 1000)
    push_bytes = len(
        server.published.view.resources["type.googleapis.com/ambient.xds.v1.WaypointResource"][
            f"VirtualService/{NS}/vs-0"
        ].SerializeToString()
    )
    await client.close()
    await server.stop(0.1)

    def row(name: str, edit: list[float], label: list[float]) -> None:
        e50, e99 = statistics.median(edit), pct(edit, 0.99)
        b50, b99 = statistics.median(label), pct(label, 0.99)
        print(f"| {name} | {e50:.1f} / {e99:.1f} | {b50:.1f} / {b99:.1f} | {e50 / b50:.2f}x |")

    print(
        f"{services} services, {len(l7.names)} L7 objects, {len(state.workloads)} workloads; "
        f"initial sync (3 types) {sync_s:.2f} s; one VirtualService resource {push_bytes} bytes"
    )
    print(
        "| measure, p50 / p99 (ms) | one VirtualService edit | one pod label (baseline) | ratio |"
    )
    print("| --- | ---: | ---: | ---: |")
    row("control plane update (index + delta)", edit_update, label_update)
    row("until the client applied it (over gRPC)", edit_total, label_total)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.services, args.changes))
