"""A stand-in for a VM outside this host's mesh: an HBONE server for a WorkloadEntry.

    python -m tests.e2e.vm_peer CACERTS_DIR ADDRESS SPIFFE_ID

Serves HBONE on ADDRESS:15008 with a certificate for SPIFFE_ID signed by the
plug-in CA in CACERTS_DIR, and answers each tunnelled HTTP request itself with
JSON naming the caller's verified identity. Prints ``LISTENING`` when ready;
stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from ambient.hbone.messages import Status
from ambient.hbone.server import HboneServer
from ambient.hbone.stream import HboneStream
from ambient.identity.ca import CertificateAuthority
from ambient.identity.spiffe import SpiffeId


async def main(cacerts: Path, address: str, identity: SpiffeId) -> None:
    with tempfile.TemporaryDirectory() as state:
        ca = CertificateAuthority.load_or_create(Path(state), plugin_dir=cacerts)
        cert = ca.issue(identity)

    async def handle(stream: HboneStream) -> None:
        stream.respond(Status.OK)
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.read()
            if not data:
                return
            request += data
        body = json.dumps(
            {
                "app": "legacy-vm",
                "peer_identity": str(stream.peer.identity),
                "authority": str(stream.request.authority),
            }
        ).encode()
        stream.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        stream.write_eof()
        while await stream.read():
            pass

    server = HboneServer(lambda: cert, handle)
    await server.start(address, 15008)
    print("LISTENING", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], SpiffeId.parse(sys.argv[3])))
