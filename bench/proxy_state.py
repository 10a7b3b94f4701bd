"""ProxyState push cost: one changed workload in a big mesh, incremental vs. rebuilding.

    .venv/bin/python bench/proxy_state.py [--workloads 10000] [--services 1000] [--pushes 200]

The baseline, measured in the same run, re-indexes the whole state for every push
(what ``ProxyState.apply`` did before it became incremental); the figure is what
``apply`` costs now for a push naming one workload (a health flip, a label change).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ambient.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.state.workload import (
    Port,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
)


def mesh(workloads: int, services: int) -> tuple[list[Service], list[Workload]]:
    vip0 = int(ipaddress.IPv4Address("10.96.0.1"))
    pod0 = int(ipaddress.IPv4Address("10.244.0.1"))
    svcs = [
        Service(
            name=f"s{i}",
            namespace="bench",
            hostname=f"s{i}.bench.svc.cluster.local",
            addresses=(ipaddress.IPv4Address(vip0 + i),),
            ports=(Port(80, 8080),),
        )
        for i in range(services)
    ]
    pods = [
        Workload(
            uid=f"Kubernetes//Pod/bench/p{i}",
            name=f"p{i}",
            namespace="bench",
            addresses=(ipaddress.IPv4Address(pod0 + i),),
            service_account="sa",
            node=f"node-{i % 10}",
            tunnel_protocol=TunnelProtocol.HBONE,
            services=FrozenMap({svcs[i % services].key: (Port(80, 8080),)}),
        )
        for i in range(workloads)
    ]
    return svcs, pods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--pushes", type=int, default=200)
    args = parser.parse_args()
    svcs, pods = mesh(args.workloads, args.services)
    state = ProxyState("node-0")
    started = time.perf_counter()
    state.apply([*svcs, *pods], [])
    initial = time.perf_counter() - started
    flips = [
        replace(pods[i % len(pods)], status=list(WorkloadStatus)[i % 2]) for i in range(args.pushes)
    ]
    started = time.perf_counter()
    for pod in flips:
        state.apply([pod], [])
    incremental = (time.perf_counter() - started) / args.pushes
    started = time.perf_counter()
    for _ in range(args.pushes):
        state._rebuild(dict(state.workloads), dict(state.services))
    rebuild = (time.perf_counter() - started) / args.pushes
    print(f"{args.workloads} workloads, {args.services} services")
    print(f"initial push (everything)        {initial * 1000:8.1f} ms")
    print(f"one-workload push, incremental   {incremental * 1000:8.3f} ms")
    print(f"one-workload push, full re-index {rebuild * 1000:8.3f} ms  (baseline)")
    print(f"speed-up                         {rebuild / incremental:8.1f}x")


if __name__ == "__main__":
    main()
