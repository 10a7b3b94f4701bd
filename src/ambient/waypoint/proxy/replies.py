"""Answers the waypoint gives itself (local replies), and Envoy's response flags.

Bodies are Envoy's (``RBAC: access denied``, ``no healthy upstream``,
``upstream request timeout``, ``upstream connect error or disconnect/reset
before headers. reset reason: ...``, ``fault filter abort``). A local reply
to a gRPC request is trailers-only with the mapped ``grpc-status`` and the
body's text as ``grpc-message`` (``proxy.grpc``); route direct responses
(redirects, 404 for no route) to gRPC requests too, as Envoy's router sends
them as local replies.
"""

from __future__ import annotations

from ambient.waypoint.model import DirectResponse, HeaderOps, Headers
from ambient.waypoint.proxy import grpc
from ambient.waypoint.proxy.accesslog import RequestRecord
from ambient.waypoint.proxy.messages import ResponseHead, ResponseSink
from ambient.waypoint.resilience.fault import FaultRoll

__all__ = [
    "CONNECT_FAILURE",
    "OVERFLOW",
    "TERMINATION",
    "add_flag",
    "direct",
    "fault_abort",
    "local_reply",
]

CONNECT_FAILURE = (
    b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
)
TERMINATION = (
    b"upstream connect error or disconnect/reset before headers. "
    b"reset reason: connection termination"
)
OVERFLOW = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
_TEXT = (("content-type", "text/plain"),)
# Envoy's response flags in the order its access log prints them.
_FLAG_ORDER = ("UH", "UT", "UF", "UC", "UR", "UO", "NR", "DI", "FI", "DC", "URX")
_ORDER = {f: i for i, f in enumerate(_FLAG_ORDER)}


def add_flag(record: RequestRecord, flag: str) -> None:
    """Add an Envoy response flag to the record (``-`` is none), keeping Envoy's order."""
    flags = set() if record.flags == "-" else set(record.flags.split(","))
    flags.add(flag)
    record.flags = ",".join(sorted(flags, key=lambda f: _ORDER.get(f, len(_ORDER))))


async def _grpc_reply(
    sink: ResponseSink, record: RequestRecord, status: int, message: str,
    headers: Headers = (), grpc_status: int | None = None,
) -> None:  # fmt: skip
    all_headers = (*grpc.local_reply_headers(status, message, grpc_status), *headers)
    record.status = 200
    record.grpc_status = next(v for k, v in all_headers if k == "grpc-status")
    await sink.send_head(ResponseHead(200, all_headers), end=True, close=True)


async def local_reply(
    sink: ResponseSink,
    record: RequestRecord,
    status: int,
    body: bytes,
    headers: Headers = (),
    *,
    grpc_status: int | None = None,
) -> None:
    """Answer ``status`` with ``body`` (a reset instead, once a response head went out)."""
    record.status = status
    if sink.started:
        sink.abort()
        return
    if record.grpc:
        await _grpc_reply(sink, record, status, body.decode("utf-8", "replace"), headers,
                          grpc_status)  # fmt: skip
        return
    all_headers = (*_TEXT, ("content-length", str(len(body))), *headers)
    record.response_bytes = len(body)
    await sink.send_head(ResponseHead(status, all_headers), end=not body, close=True)
    if body:
        await sink.send_data(body)
        await sink.end()


async def direct(
    sink: ResponseSink, record: RequestRecord, response: DirectResponse, ops: HeaderOps
) -> None:
    """A route's direct response (redirect, 404 for no route, 500 for a bad backend)."""
    if response.status == 404:
        record.flags = "NR"
    if record.grpc:
        message = response.body.decode("utf-8", "replace")
        await _grpc_reply(sink, record, response.status, message, ops.apply(response.headers))
        return
    headers = ops.apply((*response.headers, ("content-length", str(len(response.body)))))
    record.status = response.status
    record.response_bytes = len(response.body)
    await sink.send_head(ResponseHead(response.status, headers), end=not response.body, close=True)
    if response.body:
        await sink.send_data(response.body)
        await sink.end()


async def fault_abort(sink: ResponseSink, record: RequestRecord, roll: FaultRoll) -> None:
    """A fault-injected answer: Envoy's ``fault filter abort`` (gRPC: trailers-only)."""
    if roll.abort_grpc is not None:
        record.status = 200
        record.grpc_status = str(roll.abort_grpc)
        headers = (
            ("content-type", grpc.GRPC_CONTENT_TYPE),
            ("grpc-status", str(roll.abort_grpc)),
            ("grpc-message", "fault filter abort"),
        )
        await sink.send_head(ResponseHead(200, headers), end=True, close=False)
        return
    await local_reply(sink, record, roll.abort_status or 503, b"fault filter abort")
