"""Retries, fault injection, circuit breaking and outlier detection through the real waypoint.

The router is compiled from YAML (``build_router``) as in the mesh; the
``orders`` pods are real HTTP apps that fail on purpose (``/fail``, ``/reset``,
``/hang``, see the harness); requests travel client -> HBONE -> waypoint ->
HBONE -> destination ztunnel -> app.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ambient.config import load_text
from ambient.hbone.messages import SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.waypoint.proxy.clusters import Clusters
from ambient.waypoint.routing import build_router
from tests.component.waypoint.harness import ORDERS, WaypointMesh, start_mesh
from tests.component.waypoint.test_waypoint import open_tunnel, read_response
from tests.pki import make_ca

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: orders, namespace: shop}}
spec:
  hosts: [orders]
  http:
  - {rule}
    route: [{{destination: {{host: orders}}}}]
"""
DR = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: orders, namespace: shop}}
spec:
  host: orders
  trafficPolicy: {policy}
"""


async def mesh_with(tmp_path: Path, yaml: str | None) -> AsyncIterator[WaypointMesh]:
    router = build_router(load_text(yaml, "r.yaml"), [ORDERS]) if yaml else None
    async for mesh in start_mesh(make_ca(tmp_path), router=router):
        yield mesh


class Client:
    """Raw HTTP/1.1 requests over HBONE tunnels to the orders VIP through the waypoint."""

    def __init__(self, mesh: WaypointMesh) -> None:
        self.mesh = mesh
        self.pool = ConnectionPool()

    async def request(
        self, path: str, body: bytes = b"", method: str = "GET"
    ) -> tuple[int, bytes, float]:
        stream = await open_tunnel(self.mesh, SocketAddress(ORDERS.addresses[0], 80), self.pool)
        started = time.monotonic()
        length = f"content-length: {len(body)}\r\n" if body else ""
        stream.write(f"{method} {path} HTTP/1.1\r\nhost: orders\r\n{length}\r\n".encode() + body)
        head, data = await read_response(stream)
        stream.write_eof()
        return int(head.split(b" ")[1]), data, time.monotonic() - started

    async def close(self) -> None:
        await self.pool.close()


def hits(mesh: WaypointMesh, prefix: str) -> dict[str, int]:
    return {a.name: sum(r["path"].startswith(prefix) for r in a.requests) for a in mesh.apps}


def key() -> str:
    return uuid.uuid4().hex[:8]


async def flags(mesh: WaypointMesh) -> dict[str, float]:
    """istio_requests_total by (response_code, response_flags)."""
    out: dict[str, float] = {}
    for line in (await mesh.scrape()).splitlines():
        if line.startswith("istio_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            name = f"{labels['response_code']} {labels['response_flags']}"
            out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll the waypoint's own state (no event is exposed for it), failing after ``within``."""
    for _ in range(int(within / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


@pytest.fixture
async def client(mesh: WaypointMesh) -> AsyncIterator[Client]:
    c = Client(mesh)
    yield c
    await c.close()


async def test_default_policy_retries_a_503_on_the_other_endpoint(
    mesh: WaypointMesh, client: Client
) -> None:
    """No routes at all: Istio's default (2 retries on 503, other hosts first)."""
    for _ in range(6):
        status, body, _ = await client.request(f"/fail?only=orders-v1-0&key={key()}")
        assert status == 200 and json.loads(body)["name"] == "orders-v2-0"
    seen = hits(mesh, "/fail")
    assert seen["orders-v2-0"] == 6 and seen["orders-v1-0"] >= 1
    assert (await flags(mesh)) == {"200 -": 6}


async def test_default_policy_gives_up_after_two_retries_with_urx(
    mesh: WaypointMesh, client: Client
) -> None:
    status, body, _ = await client.request(f"/fail?key={key()}")
    assert (status, body) == (503, b"fail")  # the upstream's own answer goes back
    assert sum(hits(mesh, "/fail").values()) == 3
    assert (await flags(mesh)) == {"503 URX": 1}


async def test_a_500_is_not_retried_by_default(mesh: WaypointMesh, client: Client) -> None:
    status, _, _ = await client.request(f"/fail?code=500&key={key()}")
    assert status == 500 and sum(hits(mesh, "/fail").values()) == 1


@pytest.mark.parametrize(
    ("rule", "path", "expected_status", "attempts"),
    [
        ("retries: {attempts: 0}", "/fail?key={k}", 503, 1),
        ("retries: {attempts: 4, retryOn: 5xx}", "/fail?code=500&n=3&key={k}", 200, 4),
        ("retries: {attempts: 1, retryOn: 5xx}", "/fail?code=500&n=3&key={k}", 500, 2),
        ("retries: {attempts: 3, retryOn: 'gateway-error'}", "/fail?code=500&key={k}", 500, 1),
        ("retries: {attempts: 3, retryOn: '418'}", "/fail?code=418&n=2&key={k}", 200, 3),
        ("retries: {attempts: 2, retryOn: reset}", "/reset?n=1&key={k}", 200, 2),
    ],
)
async def test_virtual_service_retries(
    tmp_path: Path, rule: str, path: str, expected_status: int, attempts: int
) -> None:
    async for mesh in mesh_with(tmp_path, VS.format(rule=rule)):
        client = Client(mesh)
        try:
            status, _, _ = await client.request(path.format(k=key()))
        finally:
            await client.close()
        assert status == expected_status
        prefix = path.split("?")[0]
        assert sum(hits(mesh, prefix).values()) == attempts


async def test_reset_not_retried_by_default_is_503_uc(mesh: WaypointMesh, client: Client) -> None:
    status, body, _ = await client.request(f"/reset?key={key()}")
    assert status == 503 and b"connection termination" in body
    assert sum(hits(mesh, "/reset").values()) == 1
    assert (await flags(mesh)) == {"503 UC": 1}


async def test_per_try_timeout_and_the_route_timeout_bounds_all_attempts(tmp_path: Path) -> None:
    rule = "timeout: 1s\n    retries: {attempts: 5, perTryTimeout: 200ms, retryOn: 5xx}"
    async for mesh in mesh_with(tmp_path, VS.format(rule=rule)):
        client = Client(mesh)
        try:
            status, body, took = await client.request("/hang")
        finally:
            await client.close()
        assert (status, body) == (504, b"upstream request timeout")
        # 6 tries of 0.2 s would take 1.2 s: the 1 s route timeout ends it first (UT, not
        # UT,URX), after a retry or more. How many fit in the second depends on the load of
        # the machine (each per-try timer starts when its try does), so no upper bound on
        # the time: a loaded machine fires timers late, never early.
        assert took > 0.9, took
        assert 2 <= sum(hits(mesh, "/hang").values()) <= 5
        assert (await flags(mesh)) == {"504 UT": 1}


async def test_per_try_timeouts_exhausted(tmp_path: Path) -> None:
    rule = "retries: {attempts: 1, perTryTimeout: 150ms, retryOn: 5xx}"
    async for mesh in mesh_with(tmp_path, VS.format(rule=rule)):
        client = Client(mesh)
        try:
            status, _, took = await client.request("/hang")
        finally:
            await client.close()
        assert status == 504 and took > 0.29  # two tries of 150 ms (late on a loaded machine)
        assert sum(hits(mesh, "/hang").values()) == 2
        assert (await flags(mesh)) == {"504 UT,URX": 1}


async def test_small_body_is_sent_again_on_retry(mesh: WaypointMesh, client: Client) -> None:
    body = random.Random(3).randbytes(200_000)
    status, data, _ = await client.request(f"/fail?only=orders-v1-0&key={key()}", body, "POST")
    assert status == 200 and json.loads(data)["received"] == len(body)


async def test_big_streamed_body_passes_unbuffered_and_is_not_retried(
    mesh: WaypointMesh, client: Client
) -> None:
    big = b"z" * (3 * 1024 * 1024)  # over the 1 MiB retry buffer
    status, data, _ = await client.request("/sink", big, "POST")
    assert status == 200 and json.loads(data)["received"] == len(big)
    status, _, _ = await client.request(f"/fail?key={key()}", big, "POST")
    assert status == 503 and sum(hits(mesh, "/fail").values()) == 1  # no retry: not kept


async def test_fault_abort_and_delay(tmp_path: Path) -> None:
    rule = (
        "fault: {abort: {httpStatus: 418, percentage: {value: 100}},"
        " delay: {fixedDelay: 300ms, percentage: {value: 100}}}"
    )
    async for mesh in mesh_with(tmp_path, VS.format(rule=rule)):
        client = Client(mesh)
        try:
            status, body, took = await client.request("/hello")
        finally:
            await client.close()
        assert (status, body) == (418, b"fault filter abort") and took >= 0.3
        assert sum(len(a.requests) for a in mesh.apps) == 0  # never reached the backend
        assert (await flags(mesh)) == {"418 DI,FI": 1}


async def test_fault_percentage_is_honoured(tmp_path: Path) -> None:
    rule = "fault: {abort: {httpStatus: 503, percentage: {value: 30}}}\n    retries: {attempts: 0}"
    async for mesh in mesh_with(tmp_path, VS.format(rule=rule)):
        mesh.waypoint.forwarder.rng = random.Random(11)
        client = Client(mesh)
        n = 200
        try:
            statuses = [(await client.request("/hello"))[0] for _ in range(n)]
        finally:
            await client.close()
        aborted = statuses.count(503)
        assert abs(aborted - 0.3 * n) <= 5 * (n * 0.3 * 0.7) ** 0.5, aborted  # 5 sigma
        assert statuses.count(200) == n - aborted
        assert sum(len(a.requests) for a in mesh.apps) == n - aborted


async def test_grpc_fault_abort(tmp_path: Path) -> None:
    rule = "fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}"
    async for mesh in mesh_with(tmp_path, VS.format(rule=rule)):
        pool = ConnectionPool()
        try:
            stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
            stream.write(b"POST /svc/M HTTP/1.1\r\nhost: orders\r\ncontent-length: 0\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.read()
        finally:
            await pool.close()
        head = data.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 200") and b"grpc-status: 14" in head


async def test_connection_pool_overflow_is_503_uo(tmp_path: Path) -> None:
    policy = "{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}"
    yaml = VS.format(rule="retries: {attempts: 0}") + DR.format(policy=policy)
    async for mesh in mesh_with(tmp_path, yaml):
        client = Client(mesh)
        try:
            first = asyncio.ensure_future(client.request("/slow?ms=400"))
            second = asyncio.ensure_future(client.request("/slow?ms=400"))
            clusters = mesh.waypoint.forwarder.clusters
            await until(functools.partial(_holds, clusters, "pending"))
            status, body, _ = await client.request("/slow?ms=400")  # third: no room
            results = await asyncio.gather(first, second)
        finally:
            await client.close()
        assert status == 503 and body.endswith(b"reset reason: overflow")
        assert [r[0] for r in results] == [200, 200]
        # the pending one waited for the first: served one after the other
        assert max(r[2] for r in results) >= 0.75
        assert (await flags(mesh)) == {"200 -": 2, "503 UO": 1}


async def test_outlier_detection_ejects_the_failing_endpoint(tmp_path: Path) -> None:
    policy = "{outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 30s, maxEjectionPercent: 50}}"
    yaml = VS.format(rule="retries: {attempts: 0}") + DR.format(policy=policy)
    async for mesh in mesh_with(tmp_path, yaml):
        client = Client(mesh)
        k = key()
        try:
            statuses = [
                (await client.request(f"/fail?only=orders-v1-0&key={k}"))[0] for _ in range(20)
            ]
        finally:
            await client.close()
        # round robin: v1 fails twice, then is ejected and v2 takes everything
        assert statuses.count(503) == 2, statuses
        assert hits(mesh, "/fail")["orders-v1-0"] == 2


async def test_retry_budget_overflow_returns_the_answer_with_uo(tmp_path: Path) -> None:
    policy = "{connectionPool: {http: {maxRetries: 1}}}"
    yaml = VS.format(rule="retries: {attempts: 3, retryOn: 5xx, backoff: 400ms}") + DR.format(
        policy=policy
    )
    async for mesh in mesh_with(tmp_path, yaml):
        mesh.waypoint.forwarder.rng = random.Random(2)  # first back-off: 0.956 x 400 ms
        client = Client(mesh)
        try:
            # the first request holds the only retry slot through its back-off ...
            first = asyncio.ensure_future(client.request(f"/fail?n=1&key={key()}"))
            clusters = mesh.waypoint.forwarder.clusters
            await until(functools.partial(_holds, clusters, "retries"))
            status, _, _ = await client.request(f"/fail?n=1&key={key()}")  # ... so no retry here
            assert (await first)[0] == 200
        finally:
            await client.close()
        assert status == 503
        found: dict[str, Any] = await flags(mesh)
        assert found.get("503 UO") == 1


def _holds(clusters: Clusters, what: str) -> bool:
    """Whether some cluster holds exactly one pending request (or retry), for ``until``."""
    return any(getattr(state.limits, what) == 1 for state in clusters.states())
