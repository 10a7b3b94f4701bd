"""Peers HBONE must refuse, each with one clear log line (server) or error (client)."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ambient.hbone.errors import ConnectFailed, HboneError
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.tls import client_context
from ambient.identity.ca import CertificateAuthority
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.spiffe import SpiffeId
from tests.component.hbone.harness import ForwardingServer, LogWatcher, Upstream
from tests.pki import (
    cert_from_unknown_ca,
    cert_in_other_trust_domain,
    cert_with_other_trust_domain_san,
    cert_without_spiffe_san,
    expired_cert,
    issue,
)

WEB = SpiffeId.workload("shop", "web")


def trusting(ca: CertificateAuthority, cert: WorkloadCertificate) -> WorkloadCertificate:
    """``cert`` as a client that trusts our mesh root (so only the server's check can fail)."""
    return dataclasses.replace(cert, roots_pem=ca.roots_pem())


@pytest.fixture
def refusals() -> Iterator[LogWatcher]:
    with LogWatcher("refused connection") as watcher:
        yield watcher


BadClient = Callable[[CertificateAuthority, Path], WorkloadCertificate]


@pytest.mark.parametrize(
    ("make_cert", "expected_log"),
    [
        (lambda ca, tmp: trusting(ca, cert_from_unknown_ca(tmp, WEB)), "certificate verify failed"),
        (lambda ca, tmp: expired_cert(ca, WEB), "certificate has expired"),
        (lambda ca, tmp: cert_without_spiffe_san(ca, WEB), "has no SPIFFE URI SAN"),
        (
            lambda ca, tmp: trusting(ca, cert_in_other_trust_domain(tmp)),
            "certificate verify failed",
        ),
        (
            lambda ca, tmp: cert_with_other_trust_domain_san(ca),
            "from trust domain 'evil.example', not 'cluster.local'",
        ),
    ],
    ids=[
        "unknown-ca",
        "expired",
        "no-spiffe-san",
        "other-trust-domain-ca",
        "other-trust-domain-san",
    ],
)
async def test_server_refuses_bad_client_certificates(
    refusals: LogWatcher,
    ca: CertificateAuthority,
    tmp_path: Path,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
    make_cert: BadClient,
    expected_log: str,
) -> None:
    bad = make_cert(ca, tmp_path)
    pool = ConnectionPool(connect_timeout=5)
    assert hbone_server.address is not None
    with pytest.raises(HboneError):
        # TLS 1.3: the client may finish its handshake before the server has judged
        # its certificate, so the refusal can surface on the first stream instead.
        async with asyncio.timeout(10):
            await pool.open_stream(
                source=bad,
                destination=hbone_server.address,
                expected=[server_cert.identity],
                request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}")),
            )
    line = await refusals.first()
    assert len(refusals.lines) == 1, refusals.lines
    assert expected_log in line
    assert "127.0.0.1:" in line  # names the peer
    assert upstream.connections == 0
    await pool.close()


async def test_server_refuses_plaintext_http(
    refusals: LogWatcher, hbone_server: ForwardingServer
) -> None:
    assert hbone_server.address is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", hbone_server.address.port)
    writer.write(b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n")
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed without an HTTP answer
    writer.close()
    line = await refusals.first()
    assert len(refusals.lines) == 1, refusals.lines
    assert "plaintext HTTP CONNECT is not HBONE" in line


@pytest.mark.parametrize(
    ("alpn", "max_version", "expected_log"),
    [
        (["http/1.1"], ssl.TLSVersion.TLSv1_3, "did not negotiate ALPN h2 (got none)"),
        (["h2"], ssl.TLSVersion.TLSv1_2, "TLS 1.3 required"),
    ],
    ids=["http1.1-over-tls", "tls1.2"],
)
async def test_server_refuses_non_hbone_tls_clients(
    refusals: LogWatcher,
    client_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    alpn: list[str],
    max_version: ssl.TLSVersion,
    expected_log: str,
) -> None:
    ctx = client_context(client_cert)  # a valid mesh certificate, but the wrong protocol
    ctx.set_alpn_protocols(alpn)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = max_version
    assert hbone_server.address is not None
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", hbone_server.address.port, ssl=ctx, server_hostname=None
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
    except (ssl.SSLError, ConnectionError):
        pass  # refused during the handshake: also fine
    line = await refusals.first()
    assert len(refusals.lines) == 1, refusals.lines
    assert expected_log in line


@pytest.mark.parametrize(
    ("make_server_cert", "expected_error"),
    [
        (lambda ca, tmp: issue(ca, "shop", "impostor"), "is not the expected"),
        (
            lambda ca, tmp: cert_from_unknown_ca(tmp, SpiffeId.workload("shop", "orders")),
            "certificate verify failed",
        ),
        (
            lambda ca, tmp: expired_cert(ca, SpiffeId.workload("shop", "orders")),
            "certificate has expired",
        ),
        (lambda ca, tmp: cert_without_spiffe_san(ca), "has no SPIFFE URI SAN"),
    ],
    ids=["wrong-identity", "unknown-ca", "expired", "no-spiffe-san"],
)
async def test_client_refuses_bad_servers(
    ca: CertificateAuthority,
    tmp_path: Path,
    client_cert: WorkloadCertificate,
    upstream: Upstream,
    make_server_cert: BadClient,
    expected_error: str,
) -> None:
    bad = make_server_cert(ca, tmp_path)
    server = ForwardingServer(lambda: bad)
    address = await server.start()
    pool = ConnectionPool(connect_timeout=5)
    with pytest.raises(ConnectFailed, match=expected_error):
        await pool.open_stream(
            source=client_cert,
            destination=address,
            expected=[SpiffeId.workload("shop", "orders")],
            request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}")),
        )
    assert upstream.connections == 0
    await pool.close()
    await server.close()
