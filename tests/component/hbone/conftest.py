from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ambient.identity.ca import CertificateAuthority
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream
from tests.pki import issue, make_ca


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return make_ca(tmp_path)


@pytest.fixture
def server_cert(ca: CertificateAuthority) -> WorkloadCertificate:
    return issue(ca, "shop", "orders")


@pytest.fixture
def client_cert(ca: CertificateAuthority) -> WorkloadCertificate:
    return issue(ca, "shop", "web")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = Upstream()
    await app.start()
    yield app
    await app.close()


@pytest.fixture
async def hbone_server(server_cert: WorkloadCertificate) -> AsyncIterator[ForwardingServer]:
    server = ForwardingServer(lambda: server_cert)
    await server.start()
    yield server
    await server.close()
