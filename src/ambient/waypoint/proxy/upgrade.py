"""WebSocket (HTTP Upgrade, and HTTP/2 extended CONNECT) through the waypoint, after policy.

Istio configures Envoy's waypoint with one upgrade type, ``websocket``, so:

- an upgrade to ``websocket`` (any case) is routed and authorized like any
  request, then sent upstream as an HTTP/1.1 ``Upgrade`` on a connection of
  its own (never pooled), whatever the port declares; a ``101`` answer is
  passed on and the two connections become one byte pipe until both sides
  close (a reset on one side resets the other); any other answer is an
  ordinary response;
- any other upgrade (and a plain ``CONNECT``) is refused ``403`` before any
  filter runs, as Envoy does for a type it was not configured for (details
  ``upgrade_failed``); ``h2c`` upgrades never get here (``h1codec`` ignores
  them, as Envoy's codec does).

Decisions:

- HTTP/2 extended CONNECT (RFC 8441, ``:protocol websocket``) is translated to
  an HTTP/1.1 upgrade upstream, as Envoy does. RFC 8441 clients send no
  ``Sec-WebSocket-Key``, which HTTP/1.1 servers require: the waypoint adds a
  fresh one and does not pass the server's ``Sec-WebSocket-Accept`` back (the
  client expects none).
- The route timeout (and ``grpc-timeout``) bounds the wait for the upgrade's
  answer only; the pipe then lives as long as its two ends. No retries, no
  mirrors. The request holds a circuit-breaker slot of its cluster while the
  pipe lives (it is an active request), and is counted and logged once it ends,
  with the bytes relayed each way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os

from ambient.hbone.errors import HboneError
from ambient.hbone.stream import HboneStream
from ambient.waypoint.proxy.accesslog import RequestRecord
from ambient.waypoint.proxy.attempt import Outcome
from ambient.waypoint.proxy.balancer import Balancer, Endpoint
from ambient.waypoint.proxy.clusters import ClusterState
from ambient.waypoint.proxy.h1codec import ParseError, parse_response_head, request_head_bytes
from ambient.waypoint.proxy.h1wire import BodyReader, IncompleteMessage, MessageReader
from ambient.waypoint.proxy.messages import (
    BodyAborted,
    ConnectionSettings,
    DownstreamGone,
    DownstreamPipe,
    ResponseHead,
    ResponseSink,
    UpstreamFailed,
    UpstreamRequest,
    strip_hop_by_hop,
)
from ambient.waypoint.proxy.replies import (
    CONNECT_FAILURE,
    OVERFLOW,
    TERMINATION,
    add_flag,
    local_reply,
)
from ambient.waypoint.proxy.upstream import UpstreamClient
from ambient.waypoint.resilience.pool import Overflow

__all__ = [
    "ALLOWED",
    "UpgradeAnswer",
    "deliver_refusal",
    "forward_upgrade",
    "open_upgrade",
    "relay",
]

ALLOWED = frozenset({"websocket"})
READ_SIZE = 256 * 1024


class UpgradeAnswer:
    """The upstream's answer to an upgrade request: ``head``, its connection, and the body
    of an answer that did not switch (``body``; None for a 101)."""

    def __init__(
        self,
        head: ResponseHead,
        stream: HboneStream,
        reader: MessageReader,
        body: BodyReader | None = None,
    ) -> None:
        self.head = head
        self.stream = stream
        self.reader = reader
        self.body = body

    @property
    def switched(self) -> bool:
        return self.head.status == 101

    def close(self) -> None:
        if not self.stream.closed:
            self.stream.reset()


async def open_upgrade(
    upstream: UpstreamClient,
    endpoint: Endpoint,
    request: UpstreamRequest,
    protocol: str,
    settings: ConnectionSettings,
    *,
    add_key: bool = False,
) -> UpgradeAnswer:
    """Send ``request`` as an HTTP/1.1 upgrade to ``protocol`` on a new connection; the answer.

    Raises :class:`UpstreamFailed` (UF: no connection; UC: it ended before an answer).
    """
    stream = await upstream.open_with(endpoint, settings)
    headers = [("host", request.authority)]
    headers.extend(kv for kv in request.headers if kv[0] != "content-length")
    headers += [("connection", "upgrade"), ("upgrade", protocol)]
    if add_key and not any(k == "sec-websocket-key" for k, _ in headers):
        headers.append(("sec-websocket-key", base64.b64encode(os.urandom(16)).decode()))
    if add_key and not any(k == "sec-websocket-version" for k, _ in headers):
        headers.append(("sec-websocket-version", "13"))
    reader = MessageReader(stream)
    try:
        stream.write(request_head_bytes("GET", request.target, tuple(headers)))
        while True:
            end = await reader.head_end()
            if end is None:
                raise IncompleteMessage("connection closed before a response")
            parsed = parse_response_head(reader.buffer, end, "GET")
            reader.consume(end)
            if parsed.status == 101 or parsed.status >= 200:
                break
    except (ParseError, IncompleteMessage, HboneError) as exc:
        with contextlib.suppress(HboneError):
            stream.reset()
        raise UpstreamFailed(
            "UC",
            "upstream connect error or disconnect/reset before headers. "
            f"reset reason: connection termination ({exc})",
        ) from None
    if parsed.status == 101:
        kept = [(k, v) for k, v in parsed.headers if k not in ("connection", "upgrade")]
        upgrade = next((v for k, v in parsed.headers if k == "upgrade"), protocol)
        head = ResponseHead(101, (*kept, ("connection", "upgrade"), ("upgrade", upgrade)))
        return UpgradeAnswer(head, stream, reader)
    head = ResponseHead(parsed.status, strip_hop_by_hop(parsed.headers))
    return UpgradeAnswer(head, stream, reader, BodyReader(reader, parsed.framing, parsed.length))


async def deliver_refusal(answer: UpgradeAnswer, sink: ResponseSink, record: RequestRecord) -> None:
    """An upstream that did not switch: its answer goes to the client as a response."""
    body = answer.body
    assert body is not None
    record.status = answer.head.status
    try:
        await sink.send_head(answer.head, end=body.complete, close=True)
        while not body.complete:
            data = await body.read()
            if not data:
                break
            record.response_bytes += len(data)
            await sink.send_data(data)
        await sink.end()
    except (ParseError, IncompleteMessage, HboneError) as exc:
        record.details = f"upstream response body: {exc}"
        sink.abort()
    finally:
        answer.close()


async def relay(answer: UpgradeAnswer, pipe: DownstreamPipe, record: RequestRecord) -> None:
    """Answer the client (101 / 200) and copy bytes both ways until both sides are done."""
    stream = answer.stream
    record.status = await pipe.accept(answer.head)

    async def client_to_upstream() -> None:
        try:
            while data := await pipe.read():
                record.request_bytes += len(data)
                stream.write(data)
                await stream.drain()
            stream.write_eof()
        except BodyAborted:
            stream.reset()
            raise

    async def upstream_to_client() -> None:
        leftover, answer.reader.buffer = answer.reader.buffer, b""
        try:
            if leftover:
                record.response_bytes += len(leftover)
                await pipe.write(leftover)
            while data := await stream.read(READ_SIZE):
                record.response_bytes += len(data)
                await pipe.write(data)
            pipe.write_eof()
        except HboneError:
            pipe.abort()
            raise

    up = asyncio.ensure_future(client_to_upstream())
    down = asyncio.ensure_future(upstream_to_client())
    try:
        results = await asyncio.gather(up, down, return_exceptions=True)
    except asyncio.CancelledError:
        up.cancel()
        down.cancel()
        answer.close()
        pipe.abort()
        raise
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        answer.close()
        pipe.abort()
        if not isinstance(errors[0], BodyAborted | DownstreamGone | HboneError):
            raise errors[0]
        record.details = f"upgraded connection ended abnormally: {errors[0]}"


async def forward_upgrade(
    upstream: UpstreamClient,
    balancer: Balancer,
    cluster: ClusterState | None,
    endpoint: Endpoint,
    request: UpstreamRequest,
    protocol: str,
    *,
    timeout: float | None,
    from_http2: bool,
    sink: ResponseSink,
    pipe: DownstreamPipe | None,
    record: RequestRecord,
) -> None:
    """One upgrade attempt (no retries); a 101 becomes a byte pipe until both ends close."""
    outcome = Outcome(balancer, endpoint, cluster)
    record.destination, record.upstream_addr = endpoint.workload, endpoint.address
    try:
        if cluster is not None:
            try:
                await cluster.limits.acquire()
            except Overflow as exc:
                add_flag(record, "UO")
                record.details = f"upstream_overflow ({exc})"
                await local_reply(sink, record, 503, OVERFLOW)
                return
            outcome.holds_slot = True
        balancer.started(endpoint)
        outcome.started = True
        settings = cluster.connections if cluster is not None else ConnectionSettings()
        try:
            async with asyncio.timeout(timeout):
                answer = await open_upgrade(
                    upstream, endpoint, request, protocol, settings, add_key=from_http2
                )
        except TimeoutError:
            add_flag(record, "UT")
            await local_reply(sink, record, 504, b"upstream request timeout")
            return
        except UpstreamFailed as exc:
            add_flag(record, exc.flag)
            record.details = str(exc)
            message = CONNECT_FAILURE if exc.flag == "UF" else TERMINATION
            await local_reply(sink, record, 503, message)
            return
        if pipe is None or not answer.switched:
            await deliver_refusal(answer, sink, record)
            return
        await relay(answer, pipe, record)
    finally:
        outcome.release()
