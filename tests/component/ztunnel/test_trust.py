"""What a holder of one valid mesh certificate (or a local process) cannot make ztunnel do.

Issue 12 items 2 and 6, on the two-ztunnel loopback mesh of ``test_ztunnel``:
a tunnel to a pod's own SOCKS5 port (or any mesh listener) is refused, a
SOCKS5 port serves only its pod, and ``forwarded: for=`` is believed only from
a peer that may speak for that address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from dataclasses import replace
from typing import Any

import pytest

from ambient.authz.translate import translate_authorization_policy
from ambient.hbone.errors import StreamRefused
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.identity.certs import WorkloadCertificate
from ambient.state.workload import ApplicationTunnel, TunnelProtocol, Workload
from ambient.ztunnel import proxy_protocol
from ambient.ztunnel.selfcall import MESH_PORTS
from tests.component.ztunnel.test_ztunnel import ORDERS, WEB, Mesh, ip, pod
from tests.pki import issue

# A pod of another service account on node-1: the attacker's own, valid, workload.
MALLORY = pod("mallory-0", "1.9", "node-1", "mallory")
OUTSIDE = ip("9.9")  # a local address that is no pod's


def cert_of(mesh: Mesh, workload: Workload) -> WorkloadCertificate:
    return issue(mesh.ca, workload.namespace, workload.service_account)


async def tunnel(
    mesh: Mesh,
    cert: WorkloadCertificate,
    target: SocketAddress,
    *,
    bound: Workload | None = None,
    forwarded_for: SocketAddress | None = None,
    pool: ConnectionPool,
) -> object:
    destination = mesh.states["node-2"].workload_by_ip(target.ip)
    assert destination is not None
    return await pool.open_stream(
        source=cert,
        destination=SocketAddress(target.ip, 15008),
        expected=[destination.identity],
        request=ConnectRequest(authority=target, forwarded_for=forwarded_for),
        source_ip=str(bound.addresses[0]) if bound else None,
    )


# -- item 2: borrowing a pod's identity through its own SOCKS5 port ------------------------


async def test_a_tunnel_to_a_pods_socks_port_is_refused(mesh: Mesh) -> None:
    """A real HBONE client with a valid certificate CONNECTs to ``<orders-0>:15080``: before
    the fix the destination ztunnel dialled orders-0's SOCKS5 listener, which then spoke
    as orders-0 to anywhere. Every mesh port is a 400 now; the application port works."""
    orders = ORDERS[0]
    pool = ConnectionPool()
    try:
        for port in sorted(MESH_PORTS):
            with pytest.raises(StreamRefused) as refused:
                await tunnel(
                    mesh,
                    cert_of(mesh, WEB),
                    SocketAddress(orders.addresses[0], port),
                    bound=WEB,
                    pool=pool,
                )
            assert refused.value.status == 400, port
        stream = await tunnel(
            mesh, cert_of(mesh, WEB), SocketAddress(orders.addresses[0], 8080), pool=pool
        )
        stream.reset()  # type: ignore[attr-defined]
    finally:
        await pool.close()


async def socks_greeting(target: tuple[str, int], bound: str | None) -> bytes:
    """Send a SOCKS5 greeting from ``bound``; what comes back (b"" if closed without a word)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        if bound is not None:
            sock.bind((bound, 0))
        await loop.sock_connect(sock, target)
        await loop.sock_sendall(sock, b"\x05\x01\x00")
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 16), 5)
        except ConnectionResetError:
            return b""
    finally:
        sock.close()


async def test_a_socks_port_serves_only_its_pod(mesh: Mesh) -> None:
    """orders-0's SOCKS5 port answers a client from orders-0's own address or an unbound
    local client (how the pod's processes arrive in local mode); a client bound to
    another pod's address or to a local address that is no pod's is cut off unanswered."""
    orders = str(ORDERS[0].addresses[0])
    target = (orders, 15080)
    assert await socks_greeting(target, orders) == b"\x05\x00"
    assert await socks_greeting(target, None) == b"\x05\x00"
    assert await socks_greeting(target, str(WEB.addresses[0])) == b""
    assert await socks_greeting(target, str(OUTSIDE)) == b""


async def socks_connect(source: Workload, host: str, port: int) -> int:
    """A SOCKS5 CONNECT through ``source``'s port; the reply code."""
    reader, writer = await asyncio.open_connection(str(source.addresses[0]), 15080)
    try:
        ip4 = ipaddress.IPv4Address(host).packed
        writer.write(b"\x05\x01\x00" + b"\x05\x01\x00\x01" + ip4 + struct.pack("!H", port))
        assert await reader.readexactly(2) == b"\x05\x00"
        reply = await reader.readexactly(10)
        return reply[1]
    finally:
        writer.close()


async def test_outbound_refuses_a_pods_mesh_listener(mesh: Mesh) -> None:
    """Through its own SOCKS5 port a pod cannot reach another pod's mesh listeners
    (plain TCP or HBONE alike): 'connection not allowed by ruleset'."""
    orders = str(ORDERS[0].addresses[0])
    assert await socks_connect(WEB, orders, 15080) == 2
    assert await socks_connect(WEB, orders, 15008) == 2
    mesh.push(replace(WEB, tunnel_protocol=TunnelProtocol.NONE))
    await mesh.settle()
    assert await socks_connect(WEB, orders, 15080) == 2
    assert await socks_connect(WEB, orders, 8080) == 0


# -- item 6: the client does not choose its source address -------------------------------


def allow_only(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    spec = {"rules": [{"from": [{"source": {"ipBlocks": [f"{address}/32"]}}]}]}
    return translate_authorization_policy("only-web-address", "shop", spec).policy


async def test_forwarded_for_another_workload_is_judged_as_the_tcp_peer(mesh: Mesh) -> None:
    """mallory (a valid certificate of its own) tunnels from its own address claiming
    ``forwarded: for=<web's address>``; an ALLOW ipBlocks for web's address must judge
    mallory's real address and refuse it (401). web itself is allowed."""
    mesh.push(MALLORY)
    mesh.states["node-2"].apply([], [], [allow_only(WEB.addresses[0])])
    await mesh.settle()
    target = SocketAddress(ORDERS[0].addresses[0], 8080)
    claimed = SocketAddress(WEB.addresses[0], 40000)
    pool = ConnectionPool()
    try:
        with pytest.raises(StreamRefused) as refused:
            await tunnel(
                mesh,
                cert_of(mesh, MALLORY),
                target,
                bound=MALLORY,
                forwarded_for=claimed,
                pool=pool,
            )
        assert refused.value.status == 401
        stream = await tunnel(
            mesh, cert_of(mesh, WEB), target, bound=WEB, forwarded_for=claimed, pool=pool
        )
        stream.reset()  # type: ignore[attr-defined]
    finally:
        await pool.close()


async def proxy_app(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> tuple[asyncio.Server, asyncio.Queue[bytes]]:
    """An application that records the first bytes of each connection (its PROXY header)."""
    heads: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(16)
        length = struct.unpack("!H", head[14:16])[0]
        body = await reader.readexactly(length)
        await heads.put(head + body)
        peer = writer.get_extra_info("peername")[0].encode()
        writer.write(peer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, str(address), 8081), heads


async def test_the_app_and_its_proxy_header_see_the_real_address(mesh: Mesh) -> None:
    """No policy at all: mallory claiming web's address still reaches the app, which sees
    mallory's address, both as the TCP peer and in the PROXY header (with mallory's
    identity); a claim for a workload of its own identity is kept, port included."""
    orders = replace(ORDERS[0], application_tunnel=ApplicationTunnel.PROXY)
    mesh.push(MALLORY, orders)
    await mesh.settle()
    server, heads = await proxy_app(orders.addresses[0])
    target = SocketAddress(orders.addresses[0], 8081)
    pool = ConnectionPool()
    try:
        for claimed, expected in (
            (SocketAddress(WEB.addresses[0], 40000), (MALLORY.addresses[0], None)),
            (SocketAddress(MALLORY.addresses[0], 40001), (MALLORY.addresses[0], 40001)),
        ):
            stream = await tunnel(
                mesh,
                cert_of(mesh, MALLORY),
                target,
                bound=MALLORY,
                forwarded_for=claimed,
                pool=pool,
            )
            head = await asyncio.wait_for(heads.get(), 5)
            assert head.startswith(proxy_protocol.SIGNATURE)
            src = ipaddress.IPv4Address(head[16:20])
            src_port = struct.unpack("!H", head[24:26])[0]
            assert src == expected[0], head
            if expected[1] is not None:
                assert src_port == expected[1]
            assert str(MALLORY.identity).encode() in head
            assert await stream.read() == str(expected[0]).encode()  # type: ignore[attr-defined]
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
