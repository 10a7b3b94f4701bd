"""A raw HTTP/2 peer over real mutual TLS that writes whatever frames it is told: the attacker.

Frames are serialised with ``hyperframe`` and header blocks with ``hpack``, not
with our own HBONE code, so tests of the server's abuse limits do not depend on
the client half of what they test. Only loopback addresses are dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from ambient.hbone.tls import client_context
from ambient.identity.certs import WorkloadCertificate

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY = 0x7
DATA = 0x0
ENHANCE_YOUR_CALM = 0xB
CANCEL = 0x8


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame read from the server: its header fields and payload."""

    type: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def goaway_code(self) -> int:
        """The error code of a GOAWAY frame."""
        assert self.type == GOAWAY
        return int.from_bytes(self.payload[4:8], "big")


@dataclass
class RawH2:
    """One attacking HTTP/2 connection (client side) on a TLS stream."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    encoder: hpack.Encoder = field(default_factory=hpack.Encoder)
    received: list[RawFrame] = field(default_factory=list)
    _out: list[bytes] = field(default_factory=list)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        certificate: WorkloadCertificate | None = None,
        *,
        context: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
        preface: bool = True,
    ) -> RawH2:
        """TLS 1.3 with ALPN h2 as ``certificate``'s identity, then the preface and SETTINGS.

        ``rcvbuf``: a small receive buffer, so that replies the attacker does not
        read back up into the server quickly."""
        if context is None:
            assert certificate is not None
            context = client_context(certificate)
        sock = None
        if rcvbuf is not None:
            import socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(
                ssl=context, sock=sock, server_hostname=""
            )
        else:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=None
            )
        peer = cls(reader, writer)
        if preface:
            peer.raw(PREFACE)
            peer.frame(SettingsFrame(0, settings={}))
            await peer.flush()
        return peer

    # -- writing ---------------------------------------------------------------------

    def raw(self, data: bytes) -> None:
        self._out.append(data)

    def frame(self, *frames: Frame) -> None:
        for f in frames:
            self._out.append(f.serialize())

    def header_block(self, headers: Iterable[tuple[str, str]]) -> bytes:
        return self.encoder.encode(list(headers))

    def connect_headers(self, stream_id: int, authority: str, *, end_stream: bool = False) -> None:
        """A CONNECT request (HBONE) on ``stream_id``."""
        block = self.header_block([(":method", "CONNECT"), (":authority", authority)])
        flags = {"END_HEADERS"} | ({"END_STREAM"} if end_stream else set())
        self.frame(HeadersFrame(stream_id, data=block, flags=flags))

    def request_headers(self, stream_id: int, authority: str, path: str = "/") -> None:
        """A GET request (h2c at the waypoint), END_STREAM."""
        block = self.header_block(
            [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]
        )
        self.frame(HeadersFrame(stream_id, data=block, flags={"END_HEADERS", "END_STREAM"}))

    def rst(self, stream_id: int, code: int = CANCEL) -> None:
        self.frame(RstStreamFrame(stream_id, error_code=code))

    def ping(self, payload: bytes = b"\0" * 8) -> None:
        self.frame(PingFrame(0, opaque_data=payload))

    def settings(self, values: dict[int, int] | None = None) -> None:
        self.frame(SettingsFrame(0, settings=values or {}))

    def headers_without_end(self, stream_id: int, fragment: bytes) -> None:
        self.frame(HeadersFrame(stream_id, data=fragment))

    def continuation(self, stream_id: int, fragment: bytes, *, end: bool = False) -> None:
        self.frame(
            ContinuationFrame(stream_id, data=fragment, flags={"END_HEADERS"} if end else set())
        )

    def take(self) -> bytes:
        """The bytes queued so far (and forget them), e.g. to write them at once elsewhere."""
        out, self._out = b"".join(self._out), []
        return out

    async def flush(self) -> None:
        """Write what was queued and wait for the transport to take it."""
        data = self.take()
        if data:
            self.writer.write(data)
        await self.writer.drain()

    def write_nowait(self) -> None:
        """Write what was queued without waiting (the attacker does not care)."""
        data = self.take()
        if data:
            self.writer.write(data)

    # -- reading ---------------------------------------------------------------------

    async def read_frame(self) -> RawFrame | None:
        """The next frame from the server, or None once it closed the connection."""
        try:
            head = await self.reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            payload = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return None
        frame = RawFrame(head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload)
        self.received.append(frame)
        return frame

    async def goaway(self) -> RawFrame | None:
        """Read until a GOAWAY (returned) or the end of the connection (None)."""
        while (frame := await self.read_frame()) is not None:
            if frame.type == GOAWAY:
                return frame
        return None

    async def until_closed(self) -> list[RawFrame]:
        """Read everything until the server closes the connection."""
        while await self.read_frame() is not None:
            pass
        return self.received

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()
