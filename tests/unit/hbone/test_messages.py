"""CONNECT request parsing and formatting (HBONE's :authority and forwarded headers)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from ambient.hbone import messages
from ambient.hbone.messages import BadRequest, ConnectRequest, SocketAddress, parse_forwarded


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("10.0.0.1:8080", "10.0.0.1", 8080),
        ("127.0.0.1:1", "127.0.0.1", 1),
        ("[::1]:15008", "::1", 15008),
        ("[fd00::10]:65535", "fd00::10", 65535),
    ],
)
def test_authority_parses(text: str, ip: str, port: int) -> None:
    addr = SocketAddress.parse(text)
    assert addr.ip == ipaddress.ip_address(ip)
    assert addr.port == port
    assert str(addr) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.0.0.1", "expected ip:port"),
        ("orders.shop:8080", "is not an IP address"),
        ("10.0.0.1:0", "not in 1..65535"),
        ("10.0.0.1:65536", "not in 1..65535"),
        ("10.0.0.1:http", "not in 1..65535"),
        ("10.0.0.1:-1", "not in 1..65535"),
        ("::1:80", "must be in brackets"),
        ("[::1]80", "expected [ipv6]:port"),
        ("[nonsense]:80", "is not an IP address"),
        (":80", "is not an IP address"),
        ("", "expected ip:port"),
    ],
)
def test_authority_rejects(text: str, problem: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(problem)):
        SocketAddress.parse(text)


def test_request_headers_round_trip() -> None:
    request = ConnectRequest(
        authority=SocketAddress.parse("10.1.2.3:8080"),
        forwarded_for=SocketAddress.parse("10.9.9.9:41000"),
        forwarded_host="orders.shop.svc.cluster.local",
        baggage="k8s.namespace.name=shop",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    headers = request.to_headers()
    assert headers[:2] == [(":method", "CONNECT"), (":authority", "10.1.2.3:8080")]
    assert ("forwarded", 'for="10.9.9.9:41000";host=orders.shop.svc.cluster.local') in headers
    assert not any(name in (":scheme", ":path") for name, _ in headers)
    parsed = ConnectRequest.from_headers([(n.encode(), v.encode()) for n, v in headers])
    assert parsed == request


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ([(b":method", b"GET"), (b":authority", b"10.0.0.1:80")], "is not CONNECT"),
        ([(b":method", b"CONNECT")], "without :authority"),
        ([(b":method", b"CONNECT"), (b":authority", b"x:80")], "not an IP address"),
        (
            [(b":method", b"CONNECT"), (b":authority", b"10.0.0.1:80"), (b":path", b"/")],
            "must not carry :path",
        ),
        (
            [(b":method", b"CONNECT"), (b":authority", b"10.0.0.1:80"), (b":protocol", b"ws")],
            "must not carry :protocol",
        ),
    ],
)
def test_bad_requests(headers: list[tuple[bytes, bytes]], problem: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(problem)):
        ConnectRequest.from_headers(headers)


@pytest.mark.parametrize(
    ("value", "for_", "host"),
    [
        ('for="10.0.0.1:5000"', "10.0.0.1:5000", None),
        ('for="[::1]:5000";host=orders.shop', "[::1]:5000", "orders.shop"),
        ("for=unknown", None, None),
        ('for="10.0.0.1:5000", for="10.0.0.2:1"', "10.0.0.1:5000", None),
        ("", None, None),
    ],
)
def test_forwarded(value: str, for_: str | None, host: str | None) -> None:
    parsed_for, parsed_host = parse_forwarded(value)
    assert (str(parsed_for) if parsed_for else None) == for_
    assert parsed_host == host


def test_forwarded_for_is_not_kept() -> None:
    """The caller's address names its ephemeral port: a new text per connection, which
    would crowd the parse memo (kept for the CONNECT authority, which repeats)."""
    parsed_for, _ = parse_forwarded('for="10.9.8.7:54321"')
    assert str(parsed_for) == "10.9.8.7:54321"
    assert "10.9.8.7:54321" not in messages._PARSED
    assert SocketAddress.parse("10.9.8.7:8080") is SocketAddress.parse("10.9.8.7:8080")
