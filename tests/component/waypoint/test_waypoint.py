"""The waypoint on loopback: HBONE in from a client, HBONE out to a real destination ztunnel.

Clients: our HBONE client speaking raw HTTP/1.1, and curl (HTTP/1.1 and
HTTP/2 prior knowledge) and nghttp through ``Entry`` (the source ztunnel's
part: TCP -> HBONE to the waypoint with the web pod's certificate).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ambient.config.consistenthash import ConsistentHash, HashCookie
from ambient.config.destinationrule import LoadBalancer
from ambient.hbone.errors import StreamRefused
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.waypoint.model import (
    AuthnResult,
    AuthzVerdict,
    Backend,
    Downstream,
    RequestHead,
    RequestPrincipal,
    RouteDecision,
    Target,
)
from ambient.waypoint.proxy.defaults import AllowAll, ForwardToTarget
from tests.component.waypoint.harness import (
    ORDERS,
    ORDERS_PODS,
    TCP_PORT,
    UNBOUND,
    WAYPOINT_IP,
    WEB,
    Entry,
    WaypointMesh,
    start_mesh,
)
from tests.pki import make_ca

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def open_tunnel(mesh: WaypointMesh, target: SocketAddress, pool: ConnectionPool) -> Any:
    return await pool.open_stream(
        source=mesh.web_cert,
        destination=SocketAddress(WAYPOINT_IP, 15008),
        expected=[mesh.waypoint.identity],
        request=ConnectRequest(
            authority=target, forwarded_for=SocketAddress(WEB.addresses[0], 40000)
        ),
    )


async def read_response(stream: Any) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with content-length from an HBONE stream: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.read()
        assert chunk, f"stream ended before a response head: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += await stream.read()
    return head, body


async def curl(entry: Entry, *args: str, path: str = "/hello") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "20", *args, f"{entry.url}{path}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, (out or err).decode()


async def test_http1_keepalive_over_hbone(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
        seen = []
        for i in range(4):
            stream.write(b"GET /hello?i=%d HTTP/1.1\r\nhost: orders:80\r\n\r\n" % i)
            head, body = await read_response(stream)
            assert head.startswith(b"HTTP/1.1 200"), head
            seen.append(json.loads(body))
        assert {r["name"] for r in seen} == {"orders-v1-0", "orders-v2-0"}  # per-request LB
        first = seen[0]["headers"]
        assert first["x-forwarded-proto"] == "http"
        assert len(first["x-request-id"]) == 36
        assert first["host"] == "orders:80"
        assert seen[0]["peer"] == str(WAYPOINT_IP)  # the destination sees the waypoint
        stream.write(b"GET /hello HTTP/1.1\r\nhost: orders\r\nx-request-id: keep-me\r\n\r\n")
        _, body = await read_response(stream)
        assert json.loads(body)["headers"]["x-request-id"] == "keep-me"
        stream.write_eof()
    finally:
        await pool.close()
    # Upstream HTTP/1.1 connections were reused: 5 requests, at most one per endpoint.
    assert sum(len(a.requests) for a in mesh.apps) == 5


async def test_refuses_target_not_bound_to_this_waypoint(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        for target in (
            SocketAddress(UNBOUND.addresses[0], 80),  # a service without this waypoint
            SocketAddress(ORDERS.addresses[0], 81),  # not a port of the service
            SocketAddress(WEB.addresses[0], 8080),  # a workload without a waypoint
        ):
            with pytest.raises(StreamRefused) as refused:
                await open_tunnel(mesh, target, pool)
            assert refused.value.status == 400
    finally:
        await pool.close()


@needs_curl
@pytest.mark.parametrize("version", ["--http1.1", "--http2-prior-knowledge"])
async def test_curl_through_waypoint(mesh: WaypointMesh, version: str) -> None:
    entry = mesh.entry()
    await entry.start()
    try:
        code, out = await curl(entry, version, "-w", "\n%{http_version} %{http_code}")
        assert code == 0, out
        body, status = out.rsplit("\n", 1)
        assert status == ("1.1 200" if version == "--http1.1" else "2 200")
        assert json.loads(body)["name"].startswith("orders-")
        code, out = await curl(
            entry, version, "-H", "x-a: 1", "--data-binary", "0123456789", path="/sink"
        )
        assert code == 0 and json.loads(out)["received"] == 10, out
    finally:
        await entry.close()
    text = await mesh.scrape()
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("istio_requests_total{") and 'response_code="200"' in ln
    )
    for label in (
        'reporter="waypoint"',
        'source_principal="spiffe://cluster.local/ns/shop/sa/web"',
        'source_workload="web"',
        'destination_service="orders.shop.svc.cluster.local"',
        'destination_service_name="orders"',
        'destination_principal="spiffe://cluster.local/ns/shop/sa/orders"',
        'request_protocol="http"',
        'response_flags="-"',
        'connection_security_policy="mutual_tls"',
    ):
        assert label in line, (label, line)
    assert 'destination_version="v1"' in text and 'destination_version="v2"' in text
    assert "istio_request_duration_milliseconds_bucket{" in text
    assert 'le="0.5"' in text and "istio_request_bytes_bucket{" in text
    assert "istio_response_bytes_sum{" in text


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp is not installed")
async def test_nghttp_many_concurrent_streams(mesh: WaypointMesh) -> None:
    entry = mesh.entry()
    await entry.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            "nghttp", "-n", "-s", "-m", "40", f"{entry.url}/hello",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await entry.close()
    assert proc.returncode == 0, err.decode()
    assert out.decode().count(" 200 ") == 40, out.decode()
    counts = [len(a.requests) for a in mesh.apps]
    assert counts == [20, 20]  # round robin per request, not per connection


class DenyFromWeb(AllowAll):
    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:
        deny = request.path_only.startswith("/admin") or request.header("x-deny") is not None
        return AuthzVerdict(not deny, "shop/deny-admin")

    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        return AuthzVerdict(False, "shop/no-tcp")


class BearerMustBeGood:
    async def authenticate(self, target: Target, request: RequestHead) -> AuthnResult:
        token = request.header("authorization")
        if token is None:
            return AuthnResult()
        if token != "Bearer good":
            return AuthnResult(failure="Jwt verification fails")
        return AuthnResult(RequestPrincipal("issuer/me", "issuer", "me"))


@needs_curl
async def test_403_and_401_and_tcp_denied(tmp_path: Path) -> None:
    async for mesh in start_mesh(
        make_ca(tmp_path), authorizer=DenyFromWeb(), authenticator=BearerMustBeGood()
    ):
        entry = mesh.entry()
        await entry.start()
        try:
            code, out = await curl(entry, "-i", path="/admin")
            assert (
                code == 0 and out.startswith("HTTP/1.1 403") and out.endswith("RBAC: access denied")
            ), out
            code, out = await curl(entry, "-i", "-H", "authorization: Bearer bad", path="/x")
            assert out.startswith("HTTP/1.1 401") and "Jwt verification fails" in out, out
            assert 'www-authenticate: Bearer realm="http://' in out
            code, out = await curl(entry, "-H", "authorization: Bearer good", path="/ok")
            assert json.loads(out)["path"] == "/ok"
        finally:
            await entry.close()
        assert all(r["path"] == "/ok" for a in mesh.apps for r in a.requests)
        pool = ConnectionPool()
        try:
            stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], TCP_PORT), pool)
            stream.write(b"\x00\x01not http")
            with pytest.raises(Exception, match="reset"):
                while await stream.read():
                    pass
        finally:
            await pool.close()
        text = await mesh.scrape()
        assert 'response_code="403"' in text and 'response_code="401"' in text
        assert "istio_tcp_connections_closed_total{" in text and 'response_flags="DENY"' in text


async def test_tcp_passthrough(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], TCP_PORT), pool)
        stream.write(b"\x16\x03 binary, not HTTP")
        stream.write_eof()
        received = b""
        while chunk := await stream.read():
            received += chunk
        assert received == b"\x16\x03 binary, not HTTP"
    finally:
        await pool.close()
    text = await mesh.scrape()
    assert "istio_tcp_received_bytes_total{" in text and 'request_protocol="tcp"' in text


class Subsets:
    """Routes to the v2 subset when ``x-canary`` is set, else the service with ``lb``."""

    def __init__(self, lb: LoadBalancer) -> None:
        self.lb = lb

    def route(self, target: Target, request: RequestHead) -> RouteDecision:
        assert target.hostname is not None
        if request.header("x-canary"):
            backend = Backend(
                target.namespace, target.hostname, target.port, "v2",
                subset_labels=__import__("ambient.frozen").frozen.FrozenMap({"version": "v2"}),
            )  # fmt: skip
        else:
            backend = Backend(target.namespace, target.hostname, target.port, load_balancer=self.lb)
        if request.path_only == "/timeout":
            return RouteDecision("shop/orders", backend=backend, path="/slow?ms=2000", timeout=0.2)
        return RouteDecision("shop/orders", backend=backend)


@pytest.mark.parametrize("lb", [LoadBalancer.RANDOM, LoadBalancer.LEAST_REQUEST])
async def test_pickers_subsets_and_timeout(tmp_path: Path, lb: LoadBalancer) -> None:
    async for mesh in start_mesh(make_ca(tmp_path), router=Subsets(lb)):
        pool = ConnectionPool()
        try:
            stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
            names = []
            for _ in range(40):
                stream.write(b"GET /hello HTTP/1.1\r\nhost: orders\r\n\r\n")
                names.append(json.loads((await read_response(stream))[1])["name"])
            # Both endpoints get traffic (p of missing one in 40 draws: 2^-39).
            assert 5 <= names.count("orders-v1-0") <= 35, names
            for _ in range(5):
                stream.write(b"GET /hello HTTP/1.1\r\nhost: orders\r\nx-canary: 1\r\n\r\n")
                assert json.loads((await read_response(stream))[1])["version"] == "v2"
            stream.write(b"GET /timeout HTTP/1.1\r\nhost: orders\r\n\r\n")
            head, body = await read_response(stream)
            assert head.startswith(b"HTTP/1.1 504") and body == b"upstream request timeout"
        finally:
            await pool.close()
        assert 'response_flags="UT"' in await mesh.scrape()


async def test_no_healthy_upstream_is_503_uh(mesh: WaypointMesh) -> None:
    from ambient.state.workload import WorkloadStatus
    from tests.component.waypoint.harness import ORDERS_PODS

    mesh.state.apply([replace(w, status=WorkloadStatus.UNHEALTHY) for w in ORDERS_PODS], [])
    pool = ConnectionPool()
    try:
        stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
        stream.write(b"GET / HTTP/1.1\r\nhost: orders\r\n\r\n")
        head, body = await read_response(stream)
        assert head.startswith(b"HTTP/1.1 503") and body == b"no healthy upstream"
    finally:
        await pool.close()
    assert 'response_flags="UH"' in await mesh.scrape()


def test_default_router_routes_to_addressed_service() -> None:
    target = Target("shop", ORDERS.hostname, ORDERS.addresses[0], 80)
    decision = ForwardToTarget().route(target, RequestHead("GET", "orders", "/"))
    assert decision.backend == Backend("shop", ORDERS.hostname, 80)


class RecordPeers(AllowAll):
    def __init__(self) -> None:
        self.peers: list[tuple[str | None, str]] = []

    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:
        identity = downstream.peer_identity
        self.peers.append(
            (str(identity) if identity is not None else None, str(downstream.source_ip))
        )
        return AuthzVerdict(True, "")


async def test_a_tunnel_speaks_only_for_its_own_workloads(tmp_path: Path) -> None:
    """``forwarded`` is believed only when the peer may speak for that address: a web
    tunnel forwarding for a web workload is that workload; one forwarding for an orders
    pod (another identity) or an unknown address is judged as its own TCP address; an
    orders pod relaying an outside caller to its own Service (the hair-pin) passes the
    caller's address on with no peer identity."""
    authorizer = RecordPeers()
    outside = ipaddress.IPv4Address(f"{WAYPOINT_IP}".rsplit(".", 2)[0] + ".9.9")
    orders_pod = ORDERS_PODS[0]
    async for mesh in start_mesh(make_ca(tmp_path), authorizer=authorizer):
        orders_cert = mesh.ca.issue(orders_pod.identity, datetime.timedelta(hours=1))
        cases = [
            (mesh.web_cert, None, WEB.addresses[0]),
            (mesh.web_cert, None, orders_pod.addresses[0]),
            (mesh.web_cert, str(WEB.addresses[0]), outside),
            (orders_cert, str(orders_pod.addresses[0]), outside),
        ]
        pool = ConnectionPool()
        try:
            for cert, bound, caller in cases:
                stream = await pool.open_stream(
                    source=cert,
                    destination=SocketAddress(WAYPOINT_IP, 15008),
                    expected=[mesh.waypoint.identity],
                    request=ConnectRequest(
                        authority=SocketAddress(ORDERS.addresses[0], 80),
                        forwarded_for=SocketAddress(caller, 40000),
                    ),
                    source_ip=bound,
                )
                stream.write(b"GET /who HTTP/1.1\r\nhost: orders\r\n\r\n")
                head, _ = await read_response(stream)
                assert head.startswith(b"HTTP/1.1 200"), head
                stream.write_eof()
        finally:
            await pool.close()
    web = str(WEB.identity)
    assert authorizer.peers == [
        (web, str(WEB.addresses[0])),
        (web, "127.0.0.1"),
        (web, str(WEB.addresses[0])),
        (None, str(outside)),
    ]


def counted(text: str, metric: str) -> float:
    """The sum of ``metric``'s samples in a Prometheus text scrape."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric + "{")
    )


async def test_telemetry_turns_off_access_logs_and_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Telemetry's settings, read per request: access logging off (or only for 5xx via a
    filter) drops the lines; a disabled metric is not counted, the others still are."""
    from ambient.config.telemetry import EffectiveTelemetry

    current = [
        EffectiveTelemetry(access_log=False, disabled_metrics=frozenset({"istio_requests_total"}))
    ]
    async for mesh in start_mesh(make_ca(tmp_path), telemetry=lambda: current[0]):
        pool = ConnectionPool()
        try:
            stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
            caplog.set_level("INFO", logger="ambient.access")
            stream.write(b"GET /quiet HTTP/1.1\r\nhost: orders\r\n\r\n")
            head, _ = await read_response(stream)
            assert head.startswith(b"HTTP/1.1 200"), head
            text = await mesh.scrape()
            assert counted(text, "istio_requests_total") == 0
            assert counted(text, "istio_request_duration_milliseconds_count") == 1
            assert not [r for r in caplog.records if "/quiet" in r.getMessage()]
            current[0] = EffectiveTelemetry()  # Telemetry removed: both back
            stream.write(b"GET /loud HTTP/1.1\r\nhost: orders\r\n\r\n")
            head, _ = await read_response(stream)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert counted(await mesh.scrape(), "istio_requests_total") == 1
            assert [r for r in caplog.records if "/loud" in r.getMessage()]
            stream.write_eof()
        finally:
            await pool.close()


class Hashing:
    """Every request to the service, consistent-hashed by ``policy``."""

    def __init__(self, policy: ConsistentHash) -> None:
        self.policy = policy

    def route(self, target: Target, request: RequestHead) -> RouteDecision:
        assert target.hostname is not None
        backend = Backend(
            target.namespace, target.hostname, target.port, consistent_hash=self.policy
        )
        return RouteDecision("shop/orders", backend=backend)


async def test_consistent_hash_by_header_and_generated_cookie(tmp_path: Path) -> None:
    policy = ConsistentHash(cookie=HashCookie("sid", "/", 60.0))
    async for mesh in start_mesh(make_ca(tmp_path), router=Hashing(policy)):
        pool = ConnectionPool()
        try:
            stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
            stream.write(b"GET /hello HTTP/1.1\r\nhost: orders\r\n\r\n")
            head, body = await read_response(stream)
            cookie = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"set-cookie:")
            )
            assert cookie.startswith('sid="') and cookie.endswith("; Max-Age=60; Path=/; HttpOnly")
            first = json.loads(body)["name"]
            value = cookie.split(";", 1)[0]
            names = set()
            for _ in range(12):  # the client sends the cookie back: always the same endpoint
                stream.write(
                    f"GET /hello HTTP/1.1\r\nhost: orders\r\ncookie: {value}\r\n\r\n".encode()
                )
                head, body = await read_response(stream)
                assert b"set-cookie" not in head.lower()
                names.add(json.loads(body)["name"])
            assert names == {first}
            # Other keys reach both endpoints.
            seen = set()
            for i in range(24):
                stream.write(
                    f"GET /hello HTTP/1.1\r\nhost: orders\r\ncookie: sid={i}\r\n\r\n".encode()
                )
                seen.add(json.loads((await read_response(stream))[1])["name"])
            assert len(seen) == 2, seen
        finally:
            await pool.close()
