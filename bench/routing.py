"""Routing decisions per second: 1 attached route vs 100 (worst case: the last one matches).

Baseline, measured in the same run: a service with nothing attached (the
default-route lookup). Run: ``.venv/bin/python bench/routing.py --seconds 2``.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time

from ambient.config import load_text
from ambient.waypoint.model import RequestHead, Target
from ambient.waypoint.routing import MeshService, build_router

NS = "bench"
SERVICES = [MeshService(NS, f"svc{i}", f"svc{i}.{NS}.svc.cluster.local", (80,)) for i in range(3)]


def _routes(count: int) -> str:
    rules = "\n".join(
        f"""  - matches:
    - path: {{type: PathPrefix, value: /p{i}}}
      headers: [{{name: x-tenant, value: t{i}}}]
    backendRefs: [{{name: svc1, port: 80, weight: 90}}, {{name: svc2, port: 80, weight: 10}}]"""
        for i in range(count)
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: bench, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: svc0}}]
  rules:
{rules}
"""


def _rate(count: int | None, seconds: float) -> float:
    yaml = _routes(count) if count else ""
    table = build_router(load_text(yaml, "bench.yaml"), SERVICES, rng=random.Random(1))
    last = (count or 1) - 1
    target = Target(NS, f"svc0.{NS}.svc.cluster.local", ipaddress.ip_address("127.20.0.1"), 80)
    request = RequestHead(
        "GET",
        "svc0",
        f"/p{last}/items?x=1",
        (("user-agent", "bench"), ("accept", "*/*"), ("x-tenant", f"t{last}")),
    )
    assert table.route(target, request).backend is not None
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            table.route(target, request)
        done += 1000
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    baseline = _rate(None, args.seconds)
    print(f"nothing attached (baseline): {baseline:12,.0f} decisions/s")
    for count in (1, 100):
        rate = _rate(count, args.seconds)
        print(
            f"{count:3d} route rule(s), last matches: {rate:12,.0f} decisions/s  ({rate / baseline:.3f}x)"
        )


if __name__ == "__main__":
    main()
