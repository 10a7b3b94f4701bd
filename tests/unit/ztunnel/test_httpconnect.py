"""The HTTP CONNECT proxy's request parsing: what is served, and the answer to everything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambient.ztunnel.httpconnect import ConnectError, parse_connect
from ambient.ztunnel.socks5 import Socks5Request


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"CONNECT orders:8080 HTTP/1.1", Socks5Request("orders", 8080, True)),
        (b"CONNECT orders.shop.svc.cluster.local:443 HTTP/1.1\r\nhost: x",
         Socks5Request("orders.shop.svc.cluster.local", 443, True)),
        (b"CONNECT Orders.Shop.:80 HTTP/1.0", Socks5Request("orders.shop", 80, True)),
        (b"CONNECT 127.20.0.1:80 HTTP/1.1", Socks5Request("127.20.0.1", 80, False)),
        (b"CONNECT [fd00::1]:50051 HTTP/1.1", Socks5Request("fd00::1", 50051, False)),
        (b"CONNECT echo.grpc:50051 HTTP/1.1\r\nHost: echo.grpc:50051\r\n"
         b"User-Agent: grpc-python/1.85\r\nProxy-Authorization: Basic eDp5",
         Socks5Request("echo.grpc", 50051, True)),
    ],
)  # fmt: skip
def test_connect_targets(head: bytes, expected: Socks5Request) -> None:
    assert parse_connect(head) == expected


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET http://orders:8080/ HTTP/1.1\r\nhost: orders", 405),  # plain-HTTP proxying
        (b"POST orders:80 HTTP/1.1", 405),
        (b"CONNECT orders HTTP/1.1", 400),  # no port
        (b"CONNECT orders:0 HTTP/1.1", 400),
        (b"CONNECT orders:65536 HTTP/1.1", 400),
        (b"CONNECT orders:8o HTTP/1.1", 400),
        (b"CONNECT orders:\xd9\xa1 HTTP/1.1", 400),  # non-ASCII digits
        (b"CONNECT [not-ipv6]:80 HTTP/1.1", 400),
        (b"CONNECT or ders:80 HTTP/1.1", 400),
        (b"CONNECT -bad_host!:80 HTTP/1.1", 400),
        (b"CONNECT orders:80 HTTP/2.0", 400),
        (b"CONNECT  orders:80 HTTP/1.1", 400),
        (b"CONNECT orders:80 HTTP/1.1\r\nbad header", 400),
        (b"CONNECT orders:80 HTTP/1.1\r\nx: a\rb", 400),  # a bare CR in a value
        (b"", 400),
    ],
)
def test_refused_requests(head: bytes, status: int) -> None:
    with pytest.raises(ConnectError) as refused:
        parse_connect(head)
    assert refused.value.answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close\r\n" in refused.value.answer
    if status == 405:
        assert b"allow: CONNECT\r\n" in refused.value.answer


@given(st.binary(max_size=300))
def test_any_head_parses_or_is_refused(head: bytes) -> None:
    try:
        request = parse_connect(head)
    except ConnectError as exc:
        assert exc.answer.startswith(b"HTTP/1.1 4")
    else:
        assert 0 < request.port < 65536 and request.host
