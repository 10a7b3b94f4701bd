"""OTLP export of finished spans: a bounded queue, batches sent off the request path.

``SpanExporter.submit`` is what a request calls when it ends: it only appends to a
queue (at most ``max_queue`` spans; beyond that spans are dropped and counted in
``dropped``, never waited for). A background task wakes when ``batch_size`` spans
are waiting or every ``interval`` seconds, encodes a batch as an
``ExportTraceServiceRequest`` (protobuf written directly, ``tracing.wire``; no
SDK) and sends it:

- OTLP/gRPC (``TraceService/Export`` over h2c, grpcio's asyncio channel), the
  default of Istio's ``opentelemetry`` provider;
- OTLP/HTTP with protobuf (``POST <path>``, ``Content-Type:
  application/x-protobuf``) when the provider has ``http``, on one kept-alive
  HTTP/1.1 connection of our own.

A batch that fails (refused connection, timeout, non-2xx, gRPC error) is dropped
and counted in ``failed`` with one warning per failure streak: spans are
telemetry, not worth memory or retries that pile up behind an absent collector.
``aclose`` sends what is queued (bounded by the provider's timeout) and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ambient.waypoint.tracing.tracer import Span
from ambient.waypoint.tracing.wire import encode_request

__all__ = ["EXPORT_METHOD", "SCOPE", "ExportTarget", "SpanExporter"]

log = logging.getLogger("ambient.waypoint.tracing")
SCOPE = "ambient.waypoint"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass(frozen=True, slots=True)
class ExportTarget:
    """Where spans go: ``protocol`` ``grpc`` or ``http`` (then ``path``)."""

    host: str
    port: int
    protocol: str = "grpc"
    path: str = "/v1/traces"
    timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class _HttpSender:
    """POSTs protobuf bodies on one kept-alive HTTP/1.1 connection."""

    def __init__(self, target: ExportTarget) -> None:
        self.target = target
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, body: bytes) -> None:
        target = self.target
        if self._conn is None:
            self._conn = await asyncio.open_connection(target.host, target.port)
        reader, writer = self._conn
        head = [
            f"POST {target.path} HTTP/1.1",
            f"host: {target.authority}",
            "content-type: application/x-protobuf",
            f"content-length: {len(body)}",
            *(f"{k}: {v}" for k, v in target.headers),
        ]
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status_line = await reader.readline()
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if length:
                await reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].startswith(b"2"):
            await self.close()
            raise OSError(f"collector answered {status_line.decode('latin-1').strip()!r}")
        if close:
            await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            writer = self._conn[1]
            self._conn = None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _GrpcSender:
    def __init__(self, target: ExportTarget) -> None:
        import grpc

        self.target = target
        self._channel = grpc.aio.insecure_channel(target.authority)
        # Bytes in (already serialized), the response's bytes ignored.
        self._export = self._channel.unary_unary(EXPORT_METHOD)

    async def send(self, body: bytes) -> None:
        await self._export(body, timeout=self.target.timeout, metadata=self.target.headers or None)

    async def close(self) -> None:
        await self._channel.close()


class SpanExporter:
    """Batches spans to one OTLP endpoint (see the module docstring)."""

    def __init__(
        self,
        target: ExportTarget,
        resource: Sequence[tuple[str, str]],
        max_queue: int = 2048,
        batch_size: int = 512,
        interval: float = 1.0,
    ) -> None:
        self.target = target
        self.resource = tuple(resource)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval = interval
        self.exported = self.dropped = self.failed = 0
        self._queue: deque[Span] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False
        self._sender: _HttpSender | _GrpcSender | None = None

    def submit(self, spans: list[Span]) -> None:
        """Queue finished spans (dropped, and counted, when the queue is full)."""
        if self._closed:
            self.dropped += len(spans)
            return
        room = self.max_queue - len(self._queue)
        if room < len(spans):
            self.dropped += len(spans) - max(room, 0)
            spans = spans[: max(room, 0)]
        self._queue.extend(spans)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._queue:
            count = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            await self._send(batch)

    async def _send(self, batch: list[Span]) -> None:
        target = self.target
        try:
            body = encode_request(batch, self.resource, SCOPE)
            if self._sender is None:
                self._sender = (
                    _HttpSender(target) if target.protocol == "http" else _GrpcSender(target)
                )
            if isinstance(self._sender, _HttpSender):
                async with asyncio.timeout(target.timeout):
                    await self._sender.send(body)
            else:
                await self._sender.send(body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: drop the batch, say so once per streak
            self.failed += len(batch)
            if not self._failing:
                log.warning(
                    "tracing: %d spans not exported to %s (%s): %s",
                    len(batch), target.authority, target.protocol,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )  # fmt: skip
            self._failing = True
            return
        if self._failing:
            log.info("tracing: exporting to %s again", target.authority)
        self._failing = False
        self.exported += len(batch)

    async def flush(self) -> None:
        """Send what is queued now (tests, shutdown)."""
        await self._flush()

    async def aclose(self) -> None:
        """Send what is queued (within the provider's timeout), then stop."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.target.timeout):
                await self._flush()
        self.dropped += len(self._queue)
        self._queue.clear()
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await self._sender.close()
