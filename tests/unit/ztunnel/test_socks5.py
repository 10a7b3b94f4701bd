"""The sans-io SOCKS5 server handshake: tables, and hostile bytes (hypothesis)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.ztunnel import socks5
from ambient.ztunnel.socks5 import Reply, Socks5Error, Socks5Handshake, Socks5Request

GREETING = b"\x05\x01\x00"


def connect(atyp: int, address: bytes, port: int) -> bytes:
    return b"\x05\x01\x00" + bytes([atyp]) + address + port.to_bytes(2, "big")


def run(*chunks: bytes) -> tuple[Socks5Request | None, bytes, Socks5Handshake]:
    hs = Socks5Handshake()
    result = None
    out = b""
    for chunk in chunks:
        result = hs.receive_data(chunk)
        out += hs.data_to_send()
    return result, out, hs


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (connect(1, bytes([10, 0, 0, 7]), 8080), Socks5Request("10.0.0.7", 8080, False)),
        (
            connect(4, ipaddress.IPv6Address("fd00::1").packed, 443),
            Socks5Request("fd00::1", 443, False),
        ),
        (connect(3, b"\x06orders", 8080), Socks5Request("orders", 8080, True)),
        (
            connect(3, b"\x1dorders.shop.svc.cluster.local", 80),
            Socks5Request("orders.shop.svc.cluster.local", 80, True),
        ),
        # socks5h clients may send an IP literal as a "hostname"
        (connect(3, b"\x0a127.10.0.1", 80), Socks5Request("127.10.0.1", 80, False)),
    ],
)
def test_connect_requests(request_bytes: bytes, expected: Socks5Request) -> None:
    request, out, _ = run(GREETING, request_bytes)
    assert request == expected
    assert out == b"\x05\x00"  # "no authentication" selected


def test_byte_by_byte_and_early_data() -> None:
    data = GREETING + connect(1, bytes([10, 0, 0, 7]), 80) + b"GET / HTTP/1.1\r\n"
    hs = Socks5Handshake()
    request = None
    for i in range(len(data)):
        request = hs.receive_data(data[i : i + 1]) or request
        if request:
            break
    rest = data[data.index(b"GET") :]
    assert request == Socks5Request("10.0.0.7", 80, False)
    remaining = data[i + 1 :]
    assert hs.leftover() + remaining == rest


@pytest.mark.parametrize(
    ("chunks", "reply", "problem"),
    [
        ((b"\x04\x01\x00\x50",), None, "not SOCKS5"),
        ((b"\x05\x01\x02",), None, "no 'no authentication' method"),
        ((GREETING, b"\x05\x02\x00\x01" + bytes(6)), Reply.COMMAND_NOT_SUPPORTED, "CONNECT only"),
        ((GREETING, b"\x05\x03\x00\x01" + bytes(6)), Reply.COMMAND_NOT_SUPPORTED, "CONNECT only"),
        (
            (GREETING, b"\x05\x01\x00\x09" + bytes(6)),
            Reply.ADDRESS_TYPE_NOT_SUPPORTED,
            "address type 9",
        ),
        ((GREETING, connect(1, bytes(4), 0)), Reply.CONNECTION_REFUSED, "port 0"),
        ((GREETING, connect(3, b"\x00", 80)), Reply.HOST_UNREACHABLE, "empty hostname"),
        ((GREETING, connect(3, b"\x02\xff\xfe", 80)), Reply.HOST_UNREACHABLE, "not ASCII"),
        ((GREETING, b"\x04\x01\x00\x01" + bytes(6)), Reply.GENERAL_FAILURE, "version 4"),
    ],
)
def test_refusals(chunks: tuple[bytes, ...], reply: Reply | None, problem: str) -> None:
    with pytest.raises(Socks5Error, match=problem) as refused:
        run(*chunks)
    assert refused.value.reply == reply


def test_no_acceptable_method_is_answered_ff() -> None:
    hs = Socks5Handshake()
    with pytest.raises(Socks5Error):
        hs.receive_data(b"\x05\x01\x02")
    assert hs.data_to_send() == b"\x05\xff"


def test_reply_encoding() -> None:
    assert socks5.reply(Reply.SUCCEEDED) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    v6 = socks5.reply(Reply.HOST_UNREACHABLE, ("::1", 15080))
    assert v6[:4] == b"\x05\x04\x00\x04" and v6[-2:] == (15080).to_bytes(2, "big")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_hostile_bytes_never_crash_or_grow(chunks: list[bytes]) -> None:
    hs = Socks5Handshake()
    for chunk in chunks:
        try:
            request = hs.receive_data(chunk)
        except Socks5Error:
            return
        hs.data_to_send()
        if request is not None:
            assert 0 < request.port < 65536
            assert request.host
            return
        assert len(hs.leftover()) <= socks5.MAX_HANDSHAKE
