"""WebSocket through the real waypoint: the ``websockets`` client and server (not ours).

HTTP/1.1 ``Upgrade`` end to end, with routing and L7 policy applied to the
upgrade request; HTTP/2 extended CONNECT (RFC 8441) from an h2 client,
translated to an HTTP/1.1 upgrade upstream; other upgrade types refused 403.
"""

from __future__ import annotations

import os
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import websockets
import websockets.asyncio.client

from ambient.config import load_text
from ambient.hbone.messages import SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.waypoint.model import AuthzVerdict, Downstream, RequestHead, RequestPrincipal, Target
from ambient.waypoint.routing import build_router
from tests.component.waypoint.harness import ORDERS, WS_PORT, Entry, WaypointMesh, start_mesh
from tests.component.waypoint.test_waypoint import open_tunnel, read_response
from tests.pki import make_ca


def ws_url(entry: Entry, path: str) -> str:
    return entry.url.replace("http://", "ws://") + path


async def test_websocket_echo_through_the_waypoint(mesh: WaypointMesh) -> None:
    entry = mesh.entry(SocketAddress(ORDERS.addresses[0], WS_PORT))
    await entry.start()
    try:
        async with websockets.asyncio.client.connect(ws_url(entry, "/chat"), max_size=None) as ws:
            greeting = await ws.recv()
            assert isinstance(greeting, str) and greeting.startswith("hello from orders-")
            assert greeting.endswith(" /chat")
            await ws.send("text message")
            assert await ws.recv() == "text message"
            big = os.urandom(5 * 1024 * 1024)  # more than every window on the way
            await ws.send(big)
            assert await ws.recv() == big
    finally:
        await entry.close()
    text = await mesh.scrape()
    assert 'response_code="101"' in text


class DenyPath:
    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        return AuthzVerdict(True)

    def check(
        self, target: Target, downstream: Downstream, request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:  # fmt: skip
        return AuthzVerdict(request.path != "/denied", "shop/deny")


async def test_routing_and_policy_apply_to_the_upgrade(tmp_path: Path) -> None:
    yaml = f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: orders, namespace: shop}}
spec:
  hosts: [orders]
  http:
  - match: [{{headers: {{x-version: {{exact: v2}}}}}}]
    route: [{{destination: {{host: orders, subset: v2, port: {{number: {WS_PORT}}}}}}}]
  - route: [{{destination: {{host: orders, subset: v1, port: {{number: {WS_PORT}}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: orders, namespace: shop}}
spec:
  host: orders
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""
    router = build_router(load_text(yaml, "r.yaml"), [ORDERS])
    async for mesh in start_mesh(make_ca(tmp_path), router=router, authorizer=DenyPath()):
        entry = mesh.entry(SocketAddress(ORDERS.addresses[0], WS_PORT))
        await entry.start()
        try:
            with pytest.raises(websockets.InvalidStatus) as denied:
                async with websockets.asyncio.client.connect(ws_url(entry, "/denied")):
                    pass
            assert denied.value.response.status_code == 403
            assert denied.value.response.body == b"RBAC: access denied"
            for version in ("v1", "v2", "v1", "v2"):
                async with websockets.asyncio.client.connect(
                    ws_url(entry, "/any"), additional_headers={"x-version": version}
                ) as ws:
                    assert await ws.recv() == f"hello from orders-{version}-0 /any"
        finally:
            await entry.close()


async def test_other_upgrades_are_refused(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
        stream.write(
            b"GET /hello HTTP/1.1\r\nhost: orders\r\nconnection: upgrade\r\nupgrade: foo/1\r\n\r\n"
        )
        head, body = await read_response(stream)
        assert head.startswith(b"HTTP/1.1 403 ") and body == b""
        # an h2c upgrade is ignored (as Envoy): a plain HTTP/1.1 answer from the app
        stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
        stream.write(
            b"GET /hello HTTP/1.1\r\nhost: orders\r\nconnection: upgrade, http2-settings\r\n"
            b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        head, body = await read_response(stream)
        assert head.startswith(b"HTTP/1.1 200 ") and b'"name": "orders-' in body
        assert b"upgrade" not in body.lower()  # the app saw no Upgrade or HTTP2-Settings
    finally:
        await pool.close()


def _client_frame(payload: bytes) -> bytes:
    """One masked text frame (client to server, RFC 6455), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def _server_frames(data: bytes) -> list[bytes]:
    """Unmasked server frames with short payloads."""
    frames = []
    while len(data) >= 2:
        size = data[1] & 0x7F
        frames.append(data[2 : 2 + size])
        data = data[2 + size :]
    return frames


async def test_http2_extended_connect_websocket(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], WS_PORT), pool)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        stream.write(conn.data_to_send())
        allowed = False
        while not allowed:  # the server must advertise SETTINGS_ENABLE_CONNECT_PROTOCOL first
            for event in conn.receive_data(await stream.read()):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    setting = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
                    allowed = event.changed_settings.get(setting) is not None
            stream.write(conn.data_to_send())
        conn.send_headers(
            1,
            [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
             (":path", "/h2chat"), (":authority", "orders"), ("sec-websocket-version", "13")],
        )  # fmt: skip
        stream.write(conn.data_to_send())
        status, received = None, b""
        while not received.count(b"ping"):
            for event in conn.receive_data(await stream.read()):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                    headers = dict(event.headers)
                    assert b"sec-websocket-accept" not in headers and b"upgrade" not in headers
                    conn.send_data(1, _client_frame(b"ping"))
                elif isinstance(event, h2.events.DataReceived):
                    received += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
            stream.write(conn.data_to_send())
        assert status == b"200"
        greeting, echoed = _server_frames(received)
        assert greeting.startswith(b"hello from orders-") and greeting.endswith(b"/h2chat")
        assert echoed == b"ping"
        conn.reset_stream(1)
        stream.write(conn.data_to_send())
        stream.write_eof()
    finally:
        await pool.close()
