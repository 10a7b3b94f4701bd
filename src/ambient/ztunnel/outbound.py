"""Outbound: a local pod's connections, taken by SOCKS5 on ``<podIP>:15080``.

The source is the pod whose address was dialled. The destination (an IP, a
service VIP or a mesh hostname) is resolved against the pushed state: a VIP
picks an endpoint round robin; an enrolled destination is reached over HBONE
with the source pod's certificate, anything else by plain TCP. As ztunnel
does, the SOCKS reply is sent at once and a failure afterwards resets the
client's connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

from ambient.api.workload import TunnelProtocol, Workload
from ambient.hbone.errors import HboneError, StreamRefused
from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.splice import relay
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.spiffe import SpiffeId
from ambient.ztunnel import socks5
from ambient.ztunnel.metrics import ConnectionRecord, Direction, Metrics, ResponseFlags
from ambient.ztunnel.state import ProxyState, Upstream

log = logging.getLogger("ambient.ztunnel")

CertificateSource = Callable[[SpiffeId], Awaitable[WorkloadCertificate]]
HBONE_PORT = 15008


class OutboundHandler:
    """Serves the SOCKS5 listener of one local pod."""

    def __init__(
        self,
        state: ProxyState,
        workload_uid: str,
        metrics: Metrics,
        pool: ConnectionPool,
        certificates: CertificateSource,
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self.state = state
        self.workload_uid = workload_uid
        self.metrics = metrics
        self.pool = pool
        self.certificates = certificates
        self.connect_timeout = connect_timeout

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        try:
            request, early = await self._handshake(reader, writer)
        except (
            socks5.Socks5Error,
            ConnectionError,
            asyncio.IncompleteReadError,
            TimeoutError,
        ) as exc:
            log.debug("outbound: SOCKS5 handshake from %s:%s failed: %s", peer[0], peer[1], exc)
            writer.transport.abort()
            return
        source = self.state.workloads.get(self.workload_uid)
        if source is None:  # the pod left while we were talking
            writer.transport.abort()
            return
        try:
            upstream = await self._resolve(request, source)
        except LookupError as exc:
            log.info("outbound: %s", exc)
            writer.write(socks5.reply(socks5.Reply.HOST_UNREACHABLE))
            writer.close()
            return
        writer.write(socks5.reply(socks5.Reply.SUCCEEDED))
        await self._proxy(reader, writer, early, source, upstream, peer[1])

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[socks5.Socks5Request, bytes]:
        handshake = socks5.Socks5Handshake()
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(512)
                if not data:
                    raise ConnectionError("client closed during the SOCKS5 handshake")
                try:
                    request = handshake.receive_data(data)
                finally:
                    out = handshake.data_to_send()
                    if out:
                        writer.write(out)
                if request is not None:
                    return request, handshake.leftover()

    async def _resolve(self, request: socks5.Socks5Request, source: Workload) -> Upstream:
        if request.is_hostname:
            service = self.state.resolve_host(request.host, source.namespace)
            if service is not None:
                if not service.addresses:
                    upstream = self.state.pick_endpoint(service, request.port)
                else:
                    upstream = self.state.resolve(service.addresses[0], request.port)
                if upstream is None:
                    raise LookupError(f"no healthy endpoint of {service.hostname}:{request.port}")
                return upstream
            ip = await _lookup(request.host)
        else:
            ip = ipaddress.ip_address(request.host)
        upstream = self.state.resolve(ip, request.port)
        if upstream is None:
            raise LookupError(f"no healthy endpoint for {request.host}:{request.port}")
        return upstream

    async def _proxy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
        source: Workload,
        upstream: Upstream,
        client_port: int,
    ) -> None:
        source_addr = SocketAddress(source.addresses[0], client_port)
        hbone = source.tunnel_protocol is TunnelProtocol.HBONE and upstream.hbone
        record = ConnectionRecord(
            self.metrics,
            Direction.OUTBOUND,
            src_addr=str(source_addr),
            dst_addr=str(SocketAddress(upstream.ip, HBONE_PORT if hbone else upstream.port)),
            source=source,
            source_identity=str(source.identity) if hbone else None,
            destination=upstream.workload,
            destination_identity=str(upstream.workload.identity)
            if hbone and upstream.workload
            else None,
            service=upstream.service,
            hbone_addr=str(SocketAddress(upstream.ip, upstream.port)) if hbone else None,
            mtls=hbone,
        )
        try:
            if hbone:
                assert upstream.workload is not None
                await self._via_hbone(reader, writer, early, source, upstream, source_addr, record)
            else:
                await self._via_tcp(reader, writer, early, source, upstream, record)
        finally:
            record.close()

    async def _via_hbone(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
        source: Workload,
        upstream: Upstream,
        source_addr: SocketAddress,
        record: ConnectionRecord,
    ) -> None:
        assert upstream.workload is not None
        request = ConnectRequest(
            authority=SocketAddress(upstream.ip, upstream.port),
            forwarded_for=source_addr,
            forwarded_host=upstream.service.hostname if upstream.service else None,
        )
        try:
            cert = await self.certificates(source.identity)
            stream = await self.pool.open_stream(
                source=cert,
                destination=SocketAddress(upstream.ip, HBONE_PORT),
                expected=[upstream.workload.identity],
                request=request,
            )
        except StreamRefused as exc:
            record.flags = (
                ResponseFlags.DENY if exc.status == Status.UNAUTHORIZED else ResponseFlags.CONNECT
            )
            record.error = str(exc)
            writer.transport.abort()
            return
        except (HboneError, OSError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = str(exc)
            log.warning("outbound: %s -> %s: %s", source.name, request.authority, exc)
            writer.transport.abort()
            return
        record.open()
        if early:
            stream.write(early)
        result = await relay(stream, reader, writer)
        record.bytes_received = result.from_stream + len(early)
        record.bytes_sent = result.to_stream
        record.error = result.error

    async def _via_tcp(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
        source: Workload,
        upstream: Upstream,
        record: ConnectionRecord,
    ) -> None:
        local = (str(source.addresses[0]), 0) if source.addresses[0].is_loopback else None
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(str(upstream.ip), upstream.port, local_addr=local),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = f"connect to {upstream.ip}:{upstream.port} failed: {exc or 'timeout'}"
            writer.transport.abort()
            return
        record.open()
        if early:
            up_writer.write(early)
        result = await _pipe_tcp(reader, writer, up_reader, up_writer)
        record.bytes_received = result[0] + len(early)
        record.bytes_sent = result[1]


async def _lookup(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Resolve a hostname the mesh does not know with the system resolver."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise LookupError(f"cannot resolve {host!r}: not a mesh hostname nor in DNS") from None
    return ipaddress.ip_address(infos[0][4][0])


async def _pipe_tcp(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> tuple[int, int]:
    """Copy both ways between two TCP connections, keeping half-close; returns (a->b, b->a)."""
    counts = [0, 0]

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, index: int) -> None:
        try:
            while data := await src.read(256 * 1024):
                dst.write(data)
                counts[index] += len(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except ConnectionError:
            a_writer.transport.abort()
            b_writer.transport.abort()

    await asyncio.gather(copy(a_reader, b_writer, 0), copy(b_reader, a_writer, 1))
    for w in (a_writer, b_writer):
        w.close()
    return counts[0], counts[1]
