"""gRPC semantics at the waypoint and upstream protocol selection, as tables."""

from __future__ import annotations

import pytest

from ambient.state.workload import AppProtocol
from ambient.waypoint.proxy import grpc
from ambient.waypoint.proxy.protocols import HTTP2, HTTP11, passes_through, upstream_version


@pytest.mark.parametrize(
    ("declared", "downstream", "expected"),
    [
        (AppProtocol.HTTP11, HTTP11, HTTP11),
        (AppProtocol.HTTP11, HTTP2, HTTP11),  # declared http: HTTP/1.1 whatever the client
        (AppProtocol.HTTP2, HTTP11, HTTP2),
        (AppProtocol.HTTP2, HTTP2, HTTP2),
        (AppProtocol.GRPC, HTTP11, HTTP2),
        (AppProtocol.GRPC, HTTP2, HTTP2),
        (AppProtocol.UNKNOWN, HTTP11, HTTP11),  # undeclared: the downstream's
        (AppProtocol.UNKNOWN, HTTP2, HTTP2),
    ],
)
def test_upstream_version(declared: AppProtocol, downstream: str, expected: str) -> None:
    assert upstream_version(declared, downstream) == expected


@pytest.mark.parametrize("declared", list(AppProtocol))
def test_only_tcp_and_tls_ports_pass_through(declared: AppProtocol) -> None:
    assert passes_through(declared) is (declared in (AppProtocol.TCP, AppProtocol.TLS))


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc;charset=utf-8", True),
        ("Application/GRPC", True),
        ("application/grpc-web", False),  # gRPC-Web is not gRPC for local replies and metrics
        ("application/grpc-web+proto", False),
        ("application/grpcx", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_is_grpc(content_type: str | None, expected: bool) -> None:
    assert grpc.is_grpc(content_type) is expected


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, 13),  # INTERNAL
        (401, 16),  # UNAUTHENTICATED
        (403, 7),  # PERMISSION_DENIED
        (404, 12),  # UNIMPLEMENTED
        (429, 14),  # UNAVAILABLE
        (502, 14),
        (503, 14),
        (504, 14),
        (500, 2),  # UNKNOWN
        (301, 2),
        (200, 2),
    ],
)
def test_http_to_grpc_is_envoys_mapping(status: int, code: int) -> None:
    assert grpc.http_to_grpc(status) == code


def test_local_reply_is_trailers_only_with_the_message() -> None:
    assert grpc.local_reply_headers(403, "RBAC: access denied") == (
        ("content-type", "application/grpc"),
        ("grpc-status", "7"),
        ("grpc-message", "RBAC: access denied"),
    )
    timeout = grpc.local_reply_headers(504, "upstream request timeout", grpc.DEADLINE_EXCEEDED)
    assert ("grpc-status", "4") in timeout
    assert grpc.local_reply_headers(503, "") == (
        ("content-type", "application/grpc"),
        ("grpc-status", "14"),
    )


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("plain: text", "plain: text"),
        ("100%", "100%25"),
        ("caf\u00e9", "caf%C3%A9"),
        ("line\nbreak", "line%0Abreak"),
    ],
)
def test_grpc_message_is_percent_encoded(text: str, encoded: str) -> None:
    assert dict(grpc.local_reply_headers(500, text))["grpc-message"] == encoded


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1H", 3600.0),
        ("2M", 120.0),
        ("3S", 3.0),
        ("250m", 0.25),
        ("1500u", 0.0015),
        ("7n", 7e-9),
        ("99999999S", 99999999.0),
        (" 5S ", 5.0),
        ("100000000S", None),  # more than 8 digits
        ("5", None),
        ("5s", None),  # units are case-sensitive: s is not a unit
        ("-1S", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_timeout(value: str | None, seconds: float | None) -> None:
    assert grpc.parse_timeout(value) == (None if seconds is None else pytest.approx(seconds))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250m"), (0.0001, "1m"), (0.0, "1m"), (2.0004, "2001m"), (1e6, "1000000S")],
)
def test_format_timeout(seconds: float, text: str) -> None:
    assert grpc.format_timeout(seconds) == text
    parsed = grpc.parse_timeout(text)
    assert parsed is not None and parsed >= seconds


@pytest.mark.parametrize(
    ("route", "header", "expected"),
    [
        (None, None, None),
        (None, 2.0, 2.0),  # Istio: no route timeout, the grpc-timeout alone
        (5.0, None, 5.0),
        (5.0, 2.0, 2.0),  # the header, capped by the route timeout
        (1.0, 2.0, 1.0),
    ],
)
def test_deadline(route: float | None, header: float | None, expected: float | None) -> None:
    assert grpc.deadline(route, header) == expected
