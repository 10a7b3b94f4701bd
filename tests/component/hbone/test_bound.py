"""Connecting from a chosen source address: many short connections must not run out of ports."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ambient.hbone.bound import IP_BIND_ADDRESS_NO_PORT, connect_from
from tests.component.resolverthreads import assert_no_resolver_threads


async def test_the_source_address_is_kept_and_ports_are_chosen_at_connect() -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sock = await connect_from("127.0.0.1", port, ("127.0.0.2", 0))
        try:
            assert sock.getsockname()[0] == "127.0.0.2"
            assert sock.getsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT) == 1
            assert not sock.getblocking()
        finally:
            sock.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refused_connection_raises_and_leaves_no_socket_open() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        await connect_from("127.0.0.1", port, ("127.0.0.3", 0))


def test_a_connect_takes_no_trip_through_the_resolver_threads() -> None:
    """An HBONE pool's connection (and a relay from a chosen source) connects without
    uvloop's resolver threads."""
    assert_no_resolver_threads(
        "from ambient.hbone.bound import connect_from",
        """
        for source in ("127.0.0.4", "127.0.0.5"):
            (await connect_from("127.0.0.1", port, (source, 0))).close()
        """,
    )
