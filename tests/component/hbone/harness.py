"""Loopback peers for HBONE component tests: an upstream app and an HBONE server in front of it."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.protocol import HboneSettings
from ambient.hbone.server import HboneServer
from ambient.hbone.splice import connect_relay
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass
class Upstream:
    """A TCP app: echoes, or reads to EOF and then answers (to test half-close)."""

    mode: str = "echo"
    server: asyncio.AbstractServer | None = None
    port: int = 0
    connections: int = 0

    async def start(self) -> SocketAddress:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return SocketAddress.parse(f"127.0.0.1:{self.port}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.mode == "echo":
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            else:  # "after-eof": reply with the byte count once the client half-closed
                total = 0
                while data := await reader.read(65536):
                    total += len(data)
                writer.write(f"got {total} bytes then EOF".encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


Policy = Callable[[HboneStream], int | None]


@dataclass
class ForwardingServer:
    """An HBONE server that forwards each CONNECT to its loopback :authority."""

    certificate: Callable[[], WorkloadCertificate]
    policy: Policy | None = None
    seen: list[ConnectRequest] = field(default_factory=list)
    server: HboneServer | None = None
    address: SocketAddress | None = None
    settings: HboneSettings | None = None
    # Awaited between the upstream connect and the 200 (a slow answer, for races).
    before_answer: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> SocketAddress:
        self.server = HboneServer(self.certificate, self._handle, settings=self.settings)
        host, port = await self.server.start("127.0.0.1", 0)
        self.address = SocketAddress.parse(f"{host}:{port}")
        return self.address

    async def _handle(self, stream: HboneStream) -> None:
        self.seen.append(stream.request)
        target = stream.request.authority
        if target.ip not in LOOPBACK:
            stream.respond(Status.BAD_REQUEST)
            return
        verdict = self.policy(stream) if self.policy else None
        if verdict is not None:
            stream.respond(verdict)
            return
        try:
            tcp = await connect_relay(stream, str(target.ip), target.port)
        except OSError:
            stream.respond(Status.SERVICE_UNAVAILABLE)
            return
        if self.before_answer is not None:
            await self.before_answer()
        stream.respond(Status.OK)
        tcp.start()
        await tcp.done

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


async def read_all(stream: HboneStream) -> bytes:
    chunks = []
    while data := await stream.read():
        chunks.append(data)
    return b"".join(chunks)


class LogWatcher(logging.Handler):
    """Collects ``ambient.hbone`` log lines containing ``needle`` and signals each one."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.lines: list[str] = []
        self.arrived = asyncio.Event()
        self._logger = logging.getLogger("ambient.hbone")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.needle in message:
            self.lines.append(message)
            self.arrived.set()

    def __enter__(self) -> LogWatcher:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)

    async def first(self, timeout: float = 5.0) -> str:
        async with asyncio.timeout(timeout):
            await self.arrived.wait()
        return self.lines[0]
