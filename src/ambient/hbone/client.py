"""Dialling an HBONE server: TCP, TLS 1.3 with our workload certificate, SPIFFE check."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection

from ambient.hbone.bound import connect_from
from ambient.hbone.connection import HboneTransport
from ambient.hbone.errors import ConnectFailed
from ambient.hbone.messages import SocketAddress
from ambient.hbone.protocol import HboneSettings, Side
from ambient.hbone.server import describe_tls_error
from ambient.hbone.tls import ContextCache, PeerInfo, PeerRejected, check_server, peer_identity
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.spiffe import SpiffeId

_client_contexts = ContextCache(server_side=False)

Dialer = Callable[[str, int, str | None], Awaitable[socket.socket]]
"""Opens a connected TCP socket to (host, port) for a source address: how ztunnel dials
from inside a pod's network namespace (``ambient.ztunnel.capture``). Raises ``OSError``."""


class _Dialling(asyncio.Protocol):
    """Placeholder protocol for the TCP connection until TLS takes over."""


async def connect(
    address: SocketAddress,
    certificate: WorkloadCertificate,
    expected: Collection[SpiffeId],
    *,
    settings: HboneSettings | None = None,
    timeout: float = 10.0,
    local_address: tuple[str, int] | None = None,
    dialer: Dialer | None = None,
) -> HboneTransport:
    """Open an HBONE connection to ``address`` as ``certificate``'s identity.

    The server must present one of the ``expected`` identities. Raises
    :class:`ConnectFailed` naming the step that failed. With ``dialer`` the TCP
    connection is the dialer's (from ``local_address``'s IP), else the loop's.
    """
    loop = asyncio.get_running_loop()
    try:
        if dialer is not None:
            source = local_address[0] if local_address else None
            sock = await asyncio.wait_for(dialer(str(address.ip), address.port, source), timeout)
            transport, _ = await loop.create_connection(_Dialling, sock=sock)
        elif local_address is not None:
            async with asyncio.timeout(timeout):
                sock = await connect_from(str(address.ip), address.port, local_address)
                transport, _ = await loop.create_connection(_Dialling, sock=sock)
        else:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(_Dialling, str(address.ip), address.port), timeout
            )
    except (OSError, TimeoutError) as exc:
        raise ConnectFailed(
            f"HBONE connect to {address} failed: {exc or type(exc).__name__} "
            f"(is an HBONE server listening there, and is port {address.port} reachable?)"
        ) from None
    conn = HboneTransport(Side.CLIENT, settings)
    try:
        tls_transport = await loop.start_tls(
            transport,
            conn,
            _client_contexts.get(certificate),
            server_side=False,
            server_hostname=None,
            ssl_handshake_timeout=timeout,
        )
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        transport.abort()
        raise ConnectFailed(
            f"HBONE TLS handshake with {address} failed: {describe_tls_error(exc)}"
        ) from None
    if tls_transport is None:  # pragma: no cover
        transport.abort()
        raise ConnectFailed(f"HBONE TLS handshake with {address} failed: connection lost")
    try:
        identity = peer_identity(tls_transport.get_extra_info("ssl_object"))
        check_server(identity, expected)
    except PeerRejected as exc:
        tls_transport.abort()
        raise ConnectFailed(f"HBONE peer {address} rejected: {exc}") from None
    conn.attach(tls_transport, PeerInfo(identity, (str(address.ip), address.port)))
    return conn
