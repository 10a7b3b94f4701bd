"""The one dialer of plain TCP: as a loopback source when there is one, else from the host."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ambient.ztunnel.dial import Dialer
from tests.component.resolverthreads import assert_no_resolver_threads


class Peer(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


async def _server() -> tuple[asyncio.Server, int, asyncio.Queue[str]]:
    peers: asyncio.Queue[str] = asyncio.Queue()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.put_nowait(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], peers


@pytest.mark.parametrize(
    ("source", "seen"),
    [("127.10.0.7", "127.10.0.7"), (None, "127.0.0.1"), ("10.1.2.3", "127.0.0.1")],
    ids=["loopback-source-bound", "no-source", "non-local-source-not-bound"],
)
async def test_the_source_address_the_server_sees(source: str | None, seen: str) -> None:
    server, port, peers = await _server()
    try:
        peer = await Dialer().connect("127.0.0.1", port, source, Peer)
        async with asyncio.timeout(5):
            assert await peers.get() == seen
        assert peer.transport is not None
        peer.transport.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refused_connection_and_the_via_dialer() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        await Dialer().connect("127.0.0.1", port, None, Peer)

    server, port, peers = await _server()
    asked: list[tuple[str, int, str | None]] = []

    async def via(host: str, p: int, source: str | None) -> socket.socket:
        asked.append((host, p, source))
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, p))
        return sock

    try:
        await Dialer(via).connect("127.0.0.1", port, "10.244.0.5", Peer)
        assert asked == [("127.0.0.1", port, "10.244.0.5")]  # the namespace dialer decides
        async with asyncio.timeout(5):
            await peers.get()
    finally:
        server.close()
        await server.wait_closed()


async def test_an_ipv6_destination() -> None:
    served: asyncio.Queue[str] = asyncio.Queue()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.put_nowait(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(accepted, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        peer = await Dialer().connect("::1", port, None, Peer)
        assert peer.transport is not None
        assert peer.transport.get_extra_info("peername")[:2] == ("::1", port)
        async with asyncio.timeout(5):
            assert await served.get() == "::1"
        peer.transport.close()
    finally:
        server.close()
        await server.wait_closed()


def test_a_dial_takes_no_trip_through_the_resolver_threads() -> None:
    """The dialer connects IP literals itself: no resolver thread starts."""
    assert_no_resolver_threads(
        "from ambient.ztunnel.dial import Dialer",
        """
        for source in (None, "127.10.0.7"):
            await Dialer().connect("127.0.0.1", port, source, asyncio.Protocol)
        """,
    )
