"""istiod's port protocol decision (appProtocol, else name prefix, else well-known port), as a table."""

from __future__ import annotations

import pytest

from ambient.controlplane.protocols import kube_port_protocol, service_entry_protocol
from ambient.state.workload import AppProtocol

U, H1, H2, GRPC, TCP, TLS = (
    AppProtocol.UNKNOWN,
    AppProtocol.HTTP11,
    AppProtocol.HTTP2,
    AppProtocol.GRPC,
    AppProtocol.TCP,
    AppProtocol.TLS,
)


@pytest.mark.parametrize(
    ("port", "name", "protocol", "app_protocol", "expected"),
    [
        (80, "http", "TCP", None, H1),
        (80, "http-web", "TCP", None, H1),
        (80, "HTTP-web", "TCP", None, H1),  # case-insensitive
        (80, "http2", "TCP", None, H2),
        (80, "h2c-api", "TCP", None, H2),
        (80, "grpc", "TCP", None, GRPC),
        (80, "grpc-orders", "TCP", None, GRPC),
        (80, "grpc-web", "TCP", None, GRPC),
        (80, "grpc-web-ui", "TCP", None, GRPC),
        (80, "tcp-db", "TCP", None, TCP),
        (80, "mongo", "TCP", None, TCP),
        (443, "https", "TCP", None, TLS),
        (443, "tls-passthrough", "TCP", None, TLS),
        (80, "web", "TCP", None, U),  # no convention: detected
        (80, "", "TCP", None, U),
        (80, "httpx", "TCP", None, U),  # a prefix is the part before '-', not a string prefix
        (3306, "db", "TCP", None, TCP),  # well-known ports
        (6379, "", "TCP", None, TCP),
        (27017, "data", "TCP", None, TCP),
        (3306, "http", "TCP", None, H1),  # a name beats the well-known port
        # appProtocol beats the name
        (80, "tcp", "TCP", "grpc", GRPC),
        (80, "http", "TCP", "http2", H2),
        (80, "grpc", "TCP", "kubernetes.io/h2c", H2),
        (80, "grpc", "TCP", "kubernetes.io/ws", H1),
        (80, "http", "TCP", "kubernetes.io/wss", TLS),
        (80, "http", "TCP", "example.com/custom", U),  # unknown appProtocol: not the name
        (80, "grpc", "TCP", "", GRPC),  # empty appProtocol: unset
        (53, "grpc", "UDP", None, U),
        (80, "http", "SCTP", None, U),
    ],
)
def test_kube_port_protocol(
    port: int, name: str, protocol: str, app_protocol: str | None, expected: AppProtocol
) -> None:
    assert kube_port_protocol(port, name, protocol, app_protocol) is expected


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("HTTP", H1),
        ("HTTP2", H2),
        ("GRPC", GRPC),
        ("GRPC-WEB", GRPC),
        ("grpc", GRPC),
        ("TCP", TCP),
        ("MONGO", TCP),
        ("HTTPS", TLS),
        ("TLS", TLS),
        ("UDP", U),
    ],
)
def test_service_entry_protocol(protocol: str, expected: AppProtocol) -> None:
    assert service_entry_protocol(protocol) is expected
