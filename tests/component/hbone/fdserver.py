"""An HBONE server in its own process with few file descriptors (for the idle-flood test).

    python -m tests.component.hbone.fdserver CA_DIR NOFILE

Sets RLIMIT_NOFILE to NOFILE (soft and hard), serves HBONE on 127.0.0.1 in front
of an echo upstream, prints ``LISTENING <hbone port> <upstream port>`` and runs
until its stdin closes.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

from ambient.identity.ca import CertificateAuthority
from tests.component.hbone.harness import ForwardingServer, Upstream
from tests.pki import issue


async def main(ca_dir: Path) -> None:
    ca = CertificateAuthority.load_or_create(ca_dir, trust_domain="cluster.local")
    cert = issue(ca, "shop", "orders")
    upstream = Upstream()
    await upstream.start()
    server = ForwardingServer(lambda: cert)
    address = await server.start()
    print(f"LISTENING {address.port} {upstream.port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.close()
    await upstream.close()


if __name__ == "__main__":
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    asyncio.run(main(Path(sys.argv[1])))
