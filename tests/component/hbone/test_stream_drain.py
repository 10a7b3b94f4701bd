"""Back-pressure on one HBONE stream shared by several writers (real TLS on loopback).

The waypoint's HTTP/2 server writes every response of a tunnel, and its own
frame reader's replies, to one HBONE stream, and each of those tasks waits in
``drain()`` when the stream's queue is above its high-water mark. Every one of
them must be woken once the peer reads: a waiter left asleep stalls its
response, or the tunnel's reader (and with it every WINDOW_UPDATE the client
sends) for good.
"""

from __future__ import annotations

import asyncio
import json

from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.server import HboneServer
from ambient.hbone.stream import WRITE_HIGH_WATER, HboneStream
from ambient.identity.certs import WorkloadCertificate
from ambient.taskdump import debug_text

BOUND = 10.0  # seconds: generous on a loaded machine; a stall never ends at all


async def test_every_writer_waiting_in_drain_is_woken(
    client_cert: WorkloadCertificate, server_cert: WorkloadCertificate
) -> None:
    reading = asyncio.Event()
    received = 0
    served: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(stream: HboneStream) -> None:
        nonlocal received
        stream.respond(Status.OK)
        await reading.wait()  # a slow reader: the client's queue grows meanwhile
        while data := await stream.read():
            received += len(data)
        served.set_result(None)

    server = HboneServer(lambda: server_cert, handler)
    host, port = await server.start("127.0.0.1", 0)
    pool = ConnectionPool()
    try:
        stream = await pool.open_stream(
            source=client_cert,
            destination=SocketAddress.parse(f"{host}:{port}"),
            expected=[server_cert.identity],
            request=ConnectRequest(SocketAddress.parse("127.0.0.1:9")),
        )
        # More than the peer's windows (4 MiB per stream) and the high-water mark.
        payload = b"x" * (4 * 1024 * 1024 + 3 * WRITE_HIGH_WATER)
        stream.write(payload)
        assert not stream.writable
        writers = [asyncio.ensure_future(stream.drain()) for _ in range(4)]
        await asyncio.sleep(0)  # (all four are waiting now; none can be done yet)
        assert not any(w.done() for w in writers)
        cancelled = writers.pop()
        cancelled.cancel()  # one writer gives up (its request was reset): not the others
        await asyncio.sleep(0)
        assert cancelled.cancelled() and not any(w.done() for w in writers)
        [(_, transport)] = pool.connections()
        state = transport.describe()  # what /debug/tasks shows of it
        (ours,) = state["streams"]
        assert ours["drain_waiting"] and ours["queued"] > WRITE_HIGH_WATER
        assert state["drain_waiting"] == [ours["id"]]
        assert ours["windows"][0] == 0  # the peer's window is used up
        dump = debug_text()
        assert json.dumps(state, sort_keys=True) in dump.splitlines()
        assert dump.count("in HboneStream.drain") == 3  # each writer's stack ends there
        reading.set()
        async with asyncio.timeout(BOUND):
            await asyncio.gather(*writers)
            stream.write_eof()
            await served
        assert received == len(payload)
    finally:
        await pool.close()
        await server.close()
