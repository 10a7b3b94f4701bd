"""Certificate renewal at half-life, with an HBONE tunnel open across it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from cryptography import x509

from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.identity.ca import CertificateAuthority
from ambient.identity.certs import WorkloadCertificate, load_pem_chain
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from tests.component.hbone.harness import ForwardingServer, Upstream

ORDERS = SpiffeId.workload("shop", "orders")
WEB = SpiffeId.workload("shop", "web")
TTL = timedelta(seconds=3)


async def test_renewal_keeps_open_tunnels_and_new_handshakes_use_the_new_cert(
    ca: CertificateAuthority, upstream: Upstream
) -> None:
    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity, TTL), ca.roots_pem()

    manager = CertificateManager(sign)
    current: dict[SpiffeId, WorkloadCertificate] = {
        ORDERS: await manager.get(ORDERS),
        WEB: await manager.get(WEB),
    }
    renewed: asyncio.Queue[WorkloadCertificate] = asyncio.Queue()

    def on_new(cert: WorkloadCertificate) -> None:
        current[cert.identity] = cert
        renewed.put_nowait(cert)

    manager.subscribe(on_new)
    first_server_cert = current[ORDERS]
    server = ForwardingServer(lambda: current[ORDERS])
    address = await server.start()
    pool = ConnectionPool()
    request = ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}"))
    tunnel = await pool.open_stream(
        source=current[WEB], destination=address, expected=[ORDERS], request=request
    )

    # Wait (on the manager's own signal) until both certificates were renewed twice:
    # by then the certificates the tunnel was made with have expired.
    counts = {ORDERS: 0, WEB: 0}
    async with asyncio.timeout(20):
        while min(counts.values()) < 2:
            cert = await renewed.get()
            counts[cert.identity] += 1
            assert cert.lifetime() >= TTL
            tunnel.write(b"still here")  # the open tunnel works throughout
            assert await tunnel.read() == b"still here"
    assert first_server_cert.is_expired()
    assert current[ORDERS] is not first_server_cert

    # A new connection handshakes with the renewed certificates.
    await pool.close()
    pool = ConnectionPool()
    fresh = await pool.open_stream(
        source=current[WEB], destination=address, expected=[ORDERS], request=request
    )
    [(_, conn)] = pool.connections()
    der = conn._transport.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert x509.load_der_x509_certificate(der) == load_pem_chain(current[ORDERS].chain_pem)[0]
    fresh.reset()
    tunnel.reset()
    await pool.close()
    await server.close()
    await manager.close()
