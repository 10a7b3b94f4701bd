"""The state of one request on its way upstream, shared by the forwarder and upgrades.

- :class:`PendingRequest`: what every attempt of a request needs (and the gRPC
  deadline: each attempt carries the time left as ``grpc-timeout``);
- :class:`Outcome`: one attempt's result and the slots it holds (the
  balancer's in-flight count, a circuit-breaker slot of its cluster);
- :class:`CountingBody`: the request body, counted into the record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ambient.waypoint.model import Headers, RouteDecision
from ambient.waypoint.proxy import grpc
from ambient.waypoint.proxy.accesslog import RequestRecord
from ambient.waypoint.proxy.balancer import Balancer, Endpoint
from ambient.waypoint.proxy.clusters import ClusterState
from ambient.waypoint.proxy.hashing import Affinity
from ambient.waypoint.proxy.messages import (
    Body,
    BodyAborted,
    ResponseHead,
    ResponseSink,
    UpstreamFailed,
    UpstreamRequest,
)
from ambient.waypoint.resilience.retry import Attempt
from ambient.waypoint.tracing.tracer import Span, Trace

__all__ = ["CountingBody", "Outcome", "PendingRequest"]


class Outcome:
    """One attempt's result and the slots it holds (balancer in-flight, cluster request)."""

    __slots__ = ("attempt", "balancer", "cluster", "endpoint", "holds_slot", "overflow",
                 "result", "span", "started")  # fmt: skip

    def __init__(self, balancer: Balancer, endpoint: Endpoint, cluster: ClusterState | None):
        self.balancer = balancer
        self.endpoint = endpoint
        self.cluster = cluster
        self.attempt: Attempt | None = None
        self.result: tuple[ResponseHead, Body] | UpstreamFailed | None = None
        self.overflow: str | None = None
        self.holds_slot = False
        self.started = False
        self.span: Span | None = None  # the attempt's client span, when traced

    def release(self) -> None:
        if self.started:
            self.started = False
            self.balancer.finished(self.endpoint)
        if self.holds_slot and self.cluster is not None:
            self.holds_slot = False
            self.cluster.limits.release()


@dataclass(slots=True)
class PendingRequest:
    """One request on its way upstream: what every attempt needs."""

    endpoint: Endpoint
    cluster_size: int
    request: UpstreamRequest
    body: Body
    decision: RouteDecision
    sink: ResponseSink
    record: RequestRecord
    expires: float | None = None  # loop time of the request's deadline (gRPC: grpc-timeout)
    affinity: Affinity | None = None  # the consistent-hash key (and a cookie to set)
    trace: Trace | None = None  # the request's trace (client spans per attempt)

    def attempt_request(self) -> UpstreamRequest:
        """The request for the next attempt: a gRPC one carries the time left as grpc-timeout."""
        if self.expires is None or not self.record.grpc:
            return self.request
        left = self.expires - asyncio.get_running_loop().time()
        request = self.request
        headers = [(k, v) for k, v in request.headers if k != "grpc-timeout"]
        headers.append(("grpc-timeout", grpc.format_timeout(max(left, 0.0))))
        return UpstreamRequest(
            request.method, request.target, request.authority, tuple(headers), request.version
        )


class CountingBody:
    """Counts request body bytes into the record and notes a client that went away."""

    def __init__(self, body: Body, record: RequestRecord) -> None:
        self._body = body
        self.trailers: Headers = ()
        self._record = record
        self.length = body.length
        self.empty = body.empty
        self.aborted = False

    async def read(self) -> bytes:
        try:
            chunk = await self._body.read()
        except BodyAborted:
            self.aborted = True
            raise
        if not chunk:
            self.trailers = self._body.trailers
        self._record.request_bytes += len(chunk)
        return chunk

    def ready(self) -> bytes | None:
        data = self._body.ready()
        if data is not None:
            self.trailers = self._body.trailers
            self._record.request_bytes += len(data)
        return data
