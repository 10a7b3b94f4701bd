"""A GRPCRoute at the real waypoint with grpcio on both ends: method and header matches,
header filters, a missing backend (UNAVAILABLE) and no matching rule (UNIMPLEMENTED)."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest

from ambient.config import load_text
from ambient.waypoint.routing import build_router
from tests.component.waypoint.harness import GRPC_PORT, ORDERS, start_mesh
from tests.component.waypoint.test_grpc import Channel
from tests.e2e.grpcapp.echo import method
from tests.pki import make_ca

ROUTE = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: orders, port: {GRPC_PORT}}}]
  rules:
  - matches:
    - method: {{service: grpcapp.Echo, method: Unary}}
      headers: [{{name: x-caller, value: tests}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: x-route, value: grpcroute}}]}}
    backendRefs: [{{name: orders, port: {GRPC_PORT}}}]
  - matches: [{{method: {{service: grpcapp.Echo, method: Unary}}}}]
    backendRefs: [{{name: orders, port: {GRPC_PORT}}}]
  - matches: [{{method: {{method: Sleep}}}}]
    backendRefs: [{{name: nowhere, port: {GRPC_PORT}}}]
"""


async def test_grpcroute_matches_filters_and_errors(tmp_path: Path) -> None:
    router = build_router(load_text(ROUTE, "r.yaml"), [ORDERS])
    async for mesh in start_mesh(make_ca(tmp_path), router=router):
        async with Channel(mesh) as channel:
            unary = channel.unary_unary(method("Unary"))
            matched = unary(b"hi", metadata=(("x-caller", "tests"),))
            assert (await matched).endswith(b"|hi")
            assert dict(await matched.initial_metadata())["x-route"] == "grpcroute"
            plain = unary(b"hi")
            await plain
            assert "x-route" not in dict(await plain.initial_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await channel.unary_unary(method("Sleep"))(b"1")
            assert missing.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as unmatched:
                async for _ in channel.unary_stream(method("ServerStream"))(b"1,1"):
                    pass
            assert unmatched.value.code() == grpc.StatusCode.UNIMPLEMENTED
