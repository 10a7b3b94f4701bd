"""Connections that never finish their TLS handshake cannot keep legitimate clients out."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.identity.ca import CertificateAuthority
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.spiffe import SpiffeId

ROOT = Path(__file__).resolve().parents[3]
NOFILE = 256  # the server's whole descriptor budget
IDLE = 700  # idle connections: far more than it has descriptors


@pytest.fixture
async def small_server(ca: CertificateAuthority, tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """(HBONE port, upstream port) of a server process limited to NOFILE descriptors,
    with a certificate from ``ca`` (the conftest's, stored under ``tmp_path``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.component.hbone.fdserver",
        str(tmp_path / "pki" / "cluster.local"), str(NOFILE),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode().split()
    assert line and line[0] == "LISTENING", line
    try:
        yield int(line[1]), int(line[2])
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections that send nothing (connected: the kernel completed them)."""
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        socks.append(sock)
    return socks


async def test_idle_flood_does_not_keep_a_legitimate_tunnel_out(
    small_server: tuple[int, int], client_cert: WorkloadCertificate
) -> None:
    hbone_port, upstream_port = small_server
    idle = await idle_connections(hbone_port, IDLE)
    pool = ConnectionPool(connect_timeout=8)
    try:
        # Without the bound the server has no descriptor left to accept with, and frees
        # them only as idle handshakes time out: the tunnel would wait well past this.
        async with asyncio.timeout(8):
            stream = await pool.open_stream(
                source=client_cert,
                destination=SocketAddress.parse(f"127.0.0.1:{hbone_port}"),
                expected=[SpiffeId.workload("shop", "orders")],
                request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream_port}")),
            )
            stream.write(b"through")
            stream.write_eof()
            assert await stream.read() == b"through"
    finally:
        await pool.close()
        for sock in idle:
            sock.close()
