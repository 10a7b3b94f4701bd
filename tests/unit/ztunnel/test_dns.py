"""The DNS proxy's answers (pure function of query bytes and the pushed state), and a fuzz."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambient.state.proxy import ProxyState
from ambient.ztunnel.dns import (
    RCODE_FORMERR,
    RCODE_NXDOMAIN,
    RCODE_OK,
    RCODE_REFUSED,
    TYPE_A,
    TYPE_AAAA,
    DnsTcpProtocol,
    TcpFramer,
    answer,
    mesh_resolver,
    tcp_frame,
)
from tests.unit.state.test_proxy_state import SVC, pod


def query(name: str, qtype: int = TYPE_A, ident: int = 0x1234, qclass: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, qclass)
    )


def parse(response: bytes) -> tuple[int, int, list[str]]:
    """(id, rcode, A/AAAA addresses) of a response."""
    ident, flags, _qd, ancount = struct.unpack_from("!HHHH", response)
    assert flags & 0x8000, "not a response"
    offset = 12
    if _qd == 0:
        return ident, flags & 0xF, []
    while response[offset]:
        offset += response[offset] + 1
    offset += 5
    addresses = []
    for _ in range(ancount):
        _ptr, _rtype, _cls, _ttl, length = struct.unpack_from("!HHHIH", response, offset)
        offset += 12
        addresses.append(str(ipaddress.ip_address(response[offset : offset + length])))
        offset += length
    return ident, flags & 0xF, addresses


@pytest.fixture
def resolve() -> object:
    state = ProxyState("node-1")
    state.apply([SVC, pod(1), pod(2)], [])
    return mesh_resolver(state, lambda: "shop")


@pytest.mark.parametrize(
    ("name", "qtype", "rcode", "addresses"),
    [
        ("orders", TYPE_A, RCODE_OK, ["127.20.0.1"]),
        ("orders.shop", TYPE_A, RCODE_OK, ["127.20.0.1"]),
        ("orders.shop.svc.cluster.local", TYPE_A, RCODE_OK, ["127.20.0.1"]),
        ("ORDERS.Shop.svc.cluster.local", TYPE_A, RCODE_OK, ["127.20.0.1"]),
        ("orders.shop.svc.cluster.local", TYPE_AAAA, RCODE_OK, []),  # NODATA, not NXDOMAIN
        ("nothere.shop.svc.cluster.local", TYPE_A, RCODE_NXDOMAIN, []),
        ("orders.shop.svc.cluster.local.shop.svc.cluster.local", TYPE_A, RCODE_NXDOMAIN, []),
        ("example.com", TYPE_A, RCODE_REFUSED, []),
    ],
)
def test_answers(resolve: object, name: str, qtype: int, rcode: int, addresses: list[str]) -> None:
    response = answer(query(name, qtype), resolve)  # type: ignore[arg-type]
    assert response is not None
    assert parse(response) == (0x1234, rcode, addresses)


def test_headless_service_answers_with_its_endpoints() -> None:
    state = ProxyState("node-1")
    headless = replace(SVC, addresses=())
    state.apply([headless, pod(1), pod(2)], [])
    response = answer(query("orders.shop"), mesh_resolver(state, lambda: "shop"))
    assert response is not None
    assert sorted(parse(response)[2]) == ["127.10.0.1", "127.10.0.2"]


def test_malformed_queries() -> None:
    resolve = mesh_resolver(ProxyState("n"), lambda: "default")
    assert answer(b"\x00\x01", resolve) is None  # not even a header: dropped
    truncated = query("orders")[:-3]
    response = answer(truncated, resolve)
    assert response is not None and parse(response)[1] == RCODE_FORMERR
    not_in = answer(query("orders", qclass=3), resolve)
    assert not_in is not None and parse(not_in)[1] == RCODE_REFUSED


@given(st.binary(max_size=600))
def test_fuzz_never_raises(data: bytes) -> None:
    resolve = mesh_resolver(ProxyState("n"), lambda: "default")
    response = answer(data, resolve)
    assert response is None or response[:2] == data[:2]


# -- DNS over TCP -----------------------------------------------------------------------


def test_tcp_framer_reassembles_split_and_pipelined_messages() -> None:
    one, two = query("orders", ident=1), query("orders.shop", ident=2)
    stream = tcp_frame(one) + tcp_frame(two)
    framer = TcpFramer()
    got: list[bytes] = []
    for i in range(len(stream)):  # one byte at a time: every split point
        got += framer.feed(stream[i : i + 1])
    assert got == [one, two]
    assert TcpFramer().feed(stream) == [one, two]  # both in one segment


@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(min_value=1, max_value=64))
def test_fuzz_tcp_framer_round_trips(messages: list[bytes], chunk: int) -> None:
    stream = b"".join(tcp_frame(m) for m in messages)
    framer = TcpFramer()
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got += framer.feed(stream[i : i + chunk])
    assert got == messages


async def test_tcp_server_answers_pipelined_queries_in_order(resolve: object) -> None:
    server = await asyncio.get_running_loop().create_server(
        lambda: DnsTcpProtocol(lambda _client: resolve),  # type: ignore[arg-type,return-value]
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(tcp_frame(query("orders", ident=7)) + tcp_frame(query("example.com", ident=8)))
        answers = []
        for _ in range(2):
            length = int.from_bytes(await reader.readexactly(2), "big")
            answers.append(parse(await reader.readexactly(length)))
        assert answers == [(7, RCODE_OK, ["127.20.0.1"]), (8, RCODE_REFUSED, [])]
        writer.write(tcp_frame(b"\x00"))  # too broken to answer: the server hangs up
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
