"""A pod's HTTP CONNECT port (15081, local mode): curl and grpcio as clients, the SOCKS5 rules.

On the two-ztunnel loopback mesh of ``test_ztunnel``: the same outbound as the
pod's SOCKS5 port (names resolved by ztunnel, HBONE with the pod's identity),
only the pod itself may use it, and mesh listeners and unknown names are refused
with an HTTP answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace

import grpc
import grpc.aio

from ambient.config.frozen import FrozenMap
from ambient.state.workload import Port, Workload
from tests.component.ztunnel.test_trust import OUTSIDE
from tests.component.ztunnel.test_ztunnel import ORDERS, ORDERS_SVC, WEB, Mesh
from tests.e2e.grpcapp import echo

PORT = 15081


async def curl_connect(source: Workload, url: str) -> tuple[int, str]:
    """curl with the pod's CONNECT proxy, tunnelling even ``http://`` (``--proxytunnel``)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", "--proxytunnel",
        "--proxy", f"http://{source.addresses[0]}:{PORT}", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, (out or err).decode()


async def test_curl_reaches_a_service_by_name_through_the_connect_port(mesh: Mesh) -> None:
    code, body = await curl_connect(WEB, "http://orders.shop:80/hello")
    assert code == 0, body
    assert json.loads(body)["name"].startswith("orders-")
    code, body = await curl_connect(WEB, f"http://{ORDERS[0].addresses[0]}:8080/")
    assert code == 0 and json.loads(body)["name"] == "orders-0", body


async def raw_connect(target: str, bound: str | None = None) -> bytes:
    """One CONNECT to web-0's port from ``bound``; the answer's first bytes (b"": closed)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        if bound is not None:
            sock.bind((bound, 0))
        await loop.sock_connect(sock, (str(WEB.addresses[0]), PORT))
        await loop.sock_sendall(
            sock, f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n".encode()
        )
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 200), 5)
        except ConnectionResetError:
            return b""
    finally:
        sock.close()


async def test_the_connect_port_serves_only_its_pod(mesh: Mesh) -> None:
    target = f"{ORDERS[0].addresses[0]}:8080"
    assert (await raw_connect(target, str(WEB.addresses[0]))).startswith(b"HTTP/1.1 200 ")
    assert (await raw_connect(target)).startswith(b"HTTP/1.1 200 ")  # an unbound local client
    assert await raw_connect(target, str(ORDERS[1].addresses[0])) == b""  # another pod
    assert await raw_connect(target, str(OUTSIDE)) == b""


async def test_refusals_are_http_answers(mesh: Mesh) -> None:
    mesh_port = await raw_connect(f"{ORDERS[0].addresses[0]}:15080")
    assert mesh_port.startswith(b"HTTP/1.1 403 ")  # a mesh listener (selfcall)
    unknown = await raw_connect("no-such-name.invalid:80")
    assert unknown.startswith(b"HTTP/1.1 503 ")
    bad = await raw_connect("orders")
    assert bad.startswith(b"HTTP/1.1 400 ")


async def test_grpcio_reaches_a_mesh_name_through_the_connect_port(mesh: Mesh) -> None:
    """grpc core's own HTTP CONNECT support (``grpc.http_proxy``, what ``grpc_proxy`` sets):
    ``orders.shop`` is no DNS name, so only ztunnel can have resolved it."""
    ports = (Port(80, 8080), Port(50051, 50051))
    service = replace(ORDERS_SVC, ports=ports)
    mesh.push(service, *(replace(w, services=FrozenMap({service.key: ports})) for w in ORDERS))
    servers = [await echo.serve(str(w.addresses[0]), 50051, w.name) for w in ORDERS]
    try:
        options = [*echo.OPTIONS, ("grpc.http_proxy", f"http://{WEB.addresses[0]}:{PORT}")]
        async with grpc.aio.insecure_channel("orders.shop:50051", options=options) as channel:
            reply = await channel.unary_unary(echo.method("Unary"))(b"via CONNECT")
        assert reply.startswith(b"orders-") and reply.endswith(b"|via CONNECT")
    finally:
        for server, _ in servers:
            await server.stop(0)
