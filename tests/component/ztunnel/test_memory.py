"""A finished connection leaves nothing behind in ztunnel for the cyclic garbage collector.

Each proxied connection used to build reference cycles (the HBONE relay and its
stream held each other, and the stream held its handler task; a plain-TCP pipe and
its two ends held each other), so its objects, transports included, stayed in
memory until CPython's cyclic collector ran, whose full passes get rarer as the
heap grows. With the cycles broken, reference counting frees a connection's
objects as soon as it ends. The collector is switched off here: whatever is still
there after the connections closed is kept alive by a cycle (or a leak).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from ambient.hbone.splice import TcpRelay
from ambient.hbone.stream import HboneStream
from ambient.state.workload import TunnelProtocol, Workload
from ambient.ztunnel.pipe import TcpPipe
from tests.component.ztunnel.test_ztunnel import ORDERS, WEB, Mesh

CONNECTIONS = 40
KINDS = (HboneStream, TcpRelay, TcpPipe)


@contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def alive() -> dict[str, int]:
    """Per-connection objects still in memory (reachable or garbage not collected)."""
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, KINDS):
            name = type(obj).__name__
            counts[name] = counts.get(name, 0) + 1
    return counts


async def socks_get(source: Workload, host: str, port: int) -> bytes:
    """One HTTP request on a new connection through ``source``'s SOCKS5 port; the reply."""
    reader, writer = await asyncio.open_connection(str(source.addresses[0]), 15080)
    try:
        ip4 = ipaddress.IPv4Address(host).packed
        writer.write(b"\x05\x01\x00" + b"\x05\x01\x00\x01" + ip4 + struct.pack("!H", port))
        assert await reader.readexactly(2) == b"\x05\x00"
        assert (await reader.readexactly(10))[1] == 0, "SOCKS5 CONNECT refused"
        writer.write(b"GET / HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def settled(baseline: dict[str, int]) -> dict[str, int]:
    """Until the per-connection objects are back to ``baseline`` (the proxies finish a
    connection a few loop turns after the client saw it close), for at most 5 s."""
    for _ in range(500):
        now = alive()
        if all(now.get(k, 0) <= baseline.get(k, 0) for k in now):
            return now
        await asyncio.sleep(0.01)
    return alive()


async def test_hbone_connections_are_freed_without_the_cyclic_collector(mesh: Mesh) -> None:
    target = str(ORDERS[0].addresses[0])
    assert b"200 OK" in await socks_get(WEB, target, 8080)  # pools and caches warm
    with collector_off():
        baseline = await settled(alive())
        for _ in range(CONNECTIONS):
            assert b"200 OK" in await socks_get(WEB, target, 8080)
        left = await settled(baseline)
    assert left == baseline, f"{CONNECTIONS} HBONE connections left {left} (before: {baseline})"


async def test_plain_tcp_connections_are_freed_without_the_cyclic_collector(
    mesh: Mesh,
) -> None:
    mesh.push(replace(WEB, tunnel_protocol=TunnelProtocol.NONE))
    await mesh.settle()
    target = str(ORDERS[0].addresses[0])
    assert b"200 OK" in await socks_get(WEB, target, 8080)
    with collector_off():
        baseline = await settled(alive())
        for _ in range(CONNECTIONS):
            assert b"200 OK" in await socks_get(WEB, target, 8080)
        left = await settled(baseline)
    assert left == baseline, f"{CONNECTIONS} TCP connections left {left} (before: {baseline})"
