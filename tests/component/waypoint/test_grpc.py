"""gRPC through the real waypoint: grpcio client -> HBONE -> waypoint -> HBONE -> ztunnel -> grpcio.

The waypoint speaks HTTP/2 upstream to the ``grpcapp.Echo`` servers of the
orders pods (service port 50051 undeclared: the client's HTTP/2 is used;
port 82 declares ``grpc``). Covers every call shape, metadata and trailers,
status codes, Istio's default retry on UNAVAILABLE, deadlines and
cancellation reaching the server (which only RST_STREAM upstream can do),
and the waypoint's own answers to gRPC requests (trailers-only, mapped
``grpc-status``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from ambient.config import load_text
from ambient.hbone.messages import SocketAddress
from ambient.waypoint.model import AuthzVerdict, Downstream, RequestHead, RequestPrincipal, Target
from ambient.waypoint.routing import build_router
from tests.component.waypoint.harness import (
    GRPC_DECLARED,
    GRPC_PORT,
    ORDERS,
    Entry,
    WaypointMesh,
    start_mesh,
)
from tests.e2e.grpcapp.echo import OPTIONS, method
from tests.pki import make_ca


class Channel:
    """A grpcio channel to the orders VIP through an entry (the source ztunnel's part)."""

    def __init__(self, mesh: WaypointMesh, port: int = GRPC_PORT) -> None:
        self.entry: Entry = mesh.entry(SocketAddress(ORDERS.addresses[0], port))
        self.channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> grpc.aio.Channel:
        await self.entry.start()
        host, port = self.entry.url.removeprefix("http://").rsplit(":", 1)
        self.channel = grpc.aio.insecure_channel(f"{host}:{port}", options=OPTIONS)
        return self.channel

    async def __aexit__(self, *exc: object) -> None:
        assert self.channel is not None
        await self.channel.close()
        await self.entry.close()


def calls(mesh: WaypointMesh) -> int:
    return sum(app.grpc_echo.stats.calls for app in mesh.apps if app.grpc_echo)


def cancelled(mesh: WaypointMesh) -> int:
    return sum(app.grpc_echo.stats.cancelled for app in mesh.apps if app.grpc_echo)


@pytest.mark.parametrize("port", [GRPC_PORT, GRPC_DECLARED])
async def test_unary_with_metadata_and_trailers(mesh: WaypointMesh, port: int) -> None:
    async with Channel(mesh, port) as channel:
        call = channel.unary_unary(method("Unary"))(b"hello", metadata=(("x-client", "1"),))
        reply = await call
        initial = dict(await call.initial_metadata())
        trailing = dict(await call.trailing_metadata())
        assert await call.code() == grpc.StatusCode.OK
    name, _, echoed = reply.partition(b"|")
    assert echoed == b"hello" and name.decode().startswith("orders-")
    assert initial["x-served-by"] == name.decode()
    assert trailing["x-trailer"] == "done"  # response trailers carried end to end
    metrics = await mesh.scrape()
    assert 'request_protocol="grpc"' in metrics
    assert 'grpc_response_status="0"' in metrics


async def test_streaming_calls(mesh: WaypointMesh) -> None:
    async with Channel(mesh) as channel:
        received = [m async for m in channel.unary_stream(method("ServerStream"))(b"50,1000")]
        assert len(received) == 50 and all(len(m) == 1000 for m in received)

        async def upload() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"u" * 5000

        total = await channel.stream_unary(method("ClientStream"))(upload())
        assert total == b"100000"

        bidi = channel.stream_stream(method("Bidi"))()
        for i in range(10):  # one message in, one message out: truly interleaved
            await bidi.write(f"m{i}".encode())
            assert await bidi.read() == f"m{i}".encode()
        await bidi.done_writing()
        assert await bidi.read() == grpc.aio.EOF
        assert await bidi.code() == grpc.StatusCode.OK


async def test_error_status_and_default_retry_on_unavailable(mesh: WaypointMesh) -> None:
    async with Channel(mesh) as channel:
        before = calls(mesh)
        with pytest.raises(grpc.aio.AioRpcError) as internal:
            await channel.unary_unary(method("Unary"))(b"fail:13")
        assert internal.value.code() == grpc.StatusCode.INTERNAL
        assert internal.value.details() == "failed on request"
        assert calls(mesh) - before == 1  # INTERNAL is not in Istio's default retryOn
        before = calls(mesh)
        with pytest.raises(grpc.aio.AioRpcError) as unavailable:
            await channel.unary_unary(method("Unary"))(b"fail:14")
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        assert calls(mesh) - before == 3  # Istio's default: 2 retries on unavailable


async def test_deadline_reaches_the_server_and_cancels_it(mesh: WaypointMesh) -> None:
    async with Channel(mesh) as channel:
        before = cancelled(mesh)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await channel.unary_unary(method("Sleep"))(b"5000", timeout=0.5)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await _until(lambda: cancelled(mesh) > before, "the server to see the cancellation")
        seen = [d for app in mesh.apps if app.grpc_echo for d in app.grpc_echo.stats.deadlines]
        assert len(seen) == 1 and 0 < seen[0] <= 0.5, seen  # the time left, from grpc-timeout


async def test_client_cancellation_resets_the_upstream_stream(mesh: WaypointMesh) -> None:
    async with Channel(mesh) as channel:
        before, started = cancelled(mesh), calls(mesh)
        call = channel.unary_unary(method("Sleep"))(b"30000")  # no deadline
        await _until(lambda: calls(mesh) > started, "the call to reach the server")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await _until(lambda: cancelled(mesh) > before, "the server to see the cancellation")


class DenySleep:
    """An L7 policy that denies one gRPC method (by path, as AuthorizationPolicy paths do)."""

    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        return AuthzVerdict(True)

    def check(
        self, target: Target, downstream: Downstream, request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:  # fmt: skip
        return AuthzVerdict(request.path != method("Sleep"), "shop/deny-sleep")


async def test_waypoint_answers_are_trailers_only_with_mapped_status(tmp_path: Path) -> None:
    yaml = f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: orders, namespace: shop}}
spec:
  hosts: [orders]
  http:
  - match: [{{uri: {{exact: "{method("ClientStream")}"}}}}]
    route: [{{destination: {{host: orders, port: {{number: {GRPC_PORT}}}}}}}]
    timeout: 0.3s
  - match: [{{uri: {{prefix: "/grpcapp.Echo/Nowhere"}}}}]
    route: [{{destination: {{host: nowhere, port: {{number: 1}}}}}}]
  - route: [{{destination: {{host: orders, port: {{number: {GRPC_PORT}}}}}}}]
"""
    router = build_router(load_text(yaml, "r.yaml"), [ORDERS])
    async for mesh in start_mesh(make_ca(tmp_path), router=router, authorizer=DenySleep()):
        async with Channel(mesh) as channel:
            assert await channel.unary_unary(method("Unary"))(b"ok") != b""
            errors = {}
            for name in ("Sleep", "Nowhere", "ClientStream"):
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    if name == "ClientStream":
                        await channel.stream_unary(method(name))(_slow_upload())
                    else:
                        await channel.unary_unary(method(name))(b"100")
                errors[name] = (exc.value.code(), exc.value.details())
        assert errors["Sleep"] == (grpc.StatusCode.PERMISSION_DENIED, "RBAC: access denied")
        assert errors["Nowhere"][0] == grpc.StatusCode.UNAVAILABLE  # 500/503 from routing
        assert errors["ClientStream"] == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "upstream request timeout",
        )
        metrics = await mesh.scrape()
        assert 'grpc_response_status="7",' in metrics and 'response_code="200"' in metrics


async def _slow_upload() -> AsyncIterator[bytes]:
    for _ in range(100):
        yield b"x"
        await asyncio.sleep(0.05)


async def _until(probe: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
