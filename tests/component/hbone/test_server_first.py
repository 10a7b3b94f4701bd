"""An application that speaks first (an SMTP or SSH banner, a gRPC server's SETTINGS):
its bytes must not reach the HBONE stream before the CONNECT's 200 (RFC 9113 8.1:
DATA before a response's HEADERS is malformed; our client and Go's reset the stream)."""

from __future__ import annotations

import asyncio

from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, read_all

BANNER = b"220 mail.shop ESMTP ready\r\n"


async def test_a_banner_sent_at_once_arrives_after_the_answer(
    client_cert: WorkloadCertificate, server_cert: WorkloadCertificate
) -> None:
    written = asyncio.Event()

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        await writer.drain()
        written.set()
        await reader.read()  # until the client's end
        writer.close()

    app = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = app.sockets[0].getsockname()[1]

    async def answer_late() -> None:
        # The banner is in our socket before the 200 is queued: had the relay read it,
        # the DATA would precede the answer. A few loop turns give it every chance to.
        await written.wait()
        for _ in range(5):
            await asyncio.sleep(0)

    server = ForwardingServer(lambda: server_cert, before_answer=answer_late)
    address = await server.start()
    pool = ConnectionPool()
    try:
        stream = await pool.open_stream(
            source=client_cert,
            destination=address,
            expected=[server_cert.identity],
            request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{port}")),
        )
        stream.write_eof()
        assert await read_all(stream) == BANNER
    finally:
        await pool.close()
        await server.close()
        app.close()
        await app.wait_closed()
