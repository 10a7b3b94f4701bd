"""One request through the waypoint, whatever its HTTP version: authenticate, authorize, route, forward.

Order as in Envoy's waypoint filter chain: RequestAuthentication (invalid
token -> 401), L7 AuthorizationPolicy (denied -> 403 ``RBAC: access denied``),
both through ``policy.gate.admit``,
routing (a direct response, or a backend), endpoint pick, then the upstream
exchange with the route's header changes, rewrites and timeout; the response
streams back as it arrives.

Decisions (following Envoy's defaults in Istio's waypoint):

- ``x-request-id`` is kept when the client sent one, else a random UUID is
  added; ``x-forwarded-proto`` is set to ``http`` when absent (the tunnel is
  mTLS, the HTTP inside it is cleartext). ``x-forwarded-for`` is neither
  added nor changed: the waypoint does not use the remote address as the
  client address (``use_remote_address: false``), and the client's verified
  identity is what policy uses.
- A request addressed to a workload (workload waypoint) is forwarded to
  that workload after policy; routers are asked only about services.
- Route timeout (``RouteDecision.timeout``) covers the whole exchange, every
  attempt and back-off included, until the response is complete: before the
  response head it is ``504 upstream request timeout`` (flag ``UT``); after,
  the downstream stream is reset.
- Fault injection (``RouteDecision.fault``) runs after authorization and
  before the router's timeout starts: delay (``DI``), then abort (``FI``,
  body ``fault filter abort``).
- Retries (``RouteDecision.retry``, see ``resilience.retry``): an attempt
  lasts until its response head (the per-try timeout covers that wait; a
  body that stalls afterwards is bounded by the route timeout only). A
  retriable answer is discarded (its connection reset) and the request goes
  to an endpoint not tried yet when there is one. Nothing is retried once
  the response head went downstream, nor when the client's body has
  outgrown the retry buffer (``proxy.replay``, 1 MiB) or ended badly.
  Exhausted: the last answer goes back with ``URX``; retry budget
  (``maxRetries``) exceeded: with ``UO``. Each attempt counts for outlier
  detection and holds a circuit-breaker slot of its cluster
  (``proxy.clusters``); a refused slot is ``503 ... reset reason: overflow``
  (``UO``).
- Mirrors: see ``proxy.mirror``.
- Error answers are Envoy's (``proxy.replies``): 503 ``no healthy upstream``
  (UH), 503 ``upstream connect error or disconnect/reset before headers.
  reset reason: connection failure`` (UF), 503 ... ``connection
  termination`` (UC), 503 ... ``remote reset`` (UR, an HTTP/2 upstream reset
  the stream), 504 ``upstream request timeout`` (UT); a direct 404 is logged
  with ``NR``. To a gRPC request they are trailers-only (``proxy.grpc``).
- Upstream HTTP version: from the backend port's declared protocol and the
  client's (``proxy.protocols``). gRPC deadlines: ``proxy.grpc``; the
  ``grpc-timeout`` sent upstream is the time left at each attempt.
- Cancellation: a client that goes away (its stream reset, which cancels
  this task, or a failed write) ends the upstream exchange too (HTTP/2:
  RST_STREAM CANCEL upstream), flag ``DC``.

- Tracing (``waypoint.tracing``): ``Forwarder.tracing`` gives the tracer in
  force; a request's ``Trace`` (its server span) spans ``handle``, each
  ``_attempt`` gets a client span whose id goes upstream as the
  ``traceparent`` parent, and the spans go to the exporter once the record is
  finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from ambient.state.proxy import ProxyState
from ambient.state.workload import TunnelProtocol, Workload, WorkloadStatus
from ambient.waypoint.model import (
    Backend,
    Downstream,
    RequestAuthenticator,
    RequestAuthorizer,
    RequestHead,
    RouteDecision,
    Router,
    Target,
)
from ambient.waypoint.policy.gate import admit
from ambient.waypoint.proxy import grpc, upgrade
from ambient.waypoint.proxy.accesslog import RequestRecord
from ambient.waypoint.proxy.attempt import CountingBody, Outcome, PendingRequest
from ambient.waypoint.proxy.backends import BackendView, BackendViews
from ambient.waypoint.proxy.balancer import Balancer, Endpoint
from ambient.waypoint.proxy.clusters import Clusters, ClusterState
from ambient.waypoint.proxy.fieldtext import request_uuid
from ambient.waypoint.proxy.hashing import Affinity, request_affinity
from ambient.waypoint.proxy.messages import (
    Body,
    BodyAborted,
    ConnectionSettings,
    DownstreamGone,
    DownstreamPipe,
    ResponseHead,
    ResponseSink,
    UpstreamFailed,
    UpstreamRequest,
)
from ambient.waypoint.proxy.mirror import Mirrors
from ambient.waypoint.proxy.protocols import HTTP2, upstream_version
from ambient.waypoint.proxy.replay import ReplayableBody, WholeBody
from ambient.waypoint.proxy.replies import (
    CONNECT_FAILURE,
    OVERFLOW,
    TERMINATION,
    add_flag,
    direct,
    fault_abort,
    local_reply,
)
from ambient.waypoint.proxy.upstream import UpstreamClient
from ambient.waypoint.proxy.upstreamfields import UpstreamFields
from ambient.waypoint.resilience.pool import Overflow
from ambient.waypoint.resilience.retry import Attempt, Failure
from ambient.waypoint.tracing.tracer import Trace, Tracer

log = logging.getLogger("ambient.waypoint")

__all__ = ["Forwarder", "Policies", "add_flag"]


@dataclass(frozen=True, slots=True)
class Policies:
    """The three pluggable parts (see ``waypoint.model``)."""

    authenticator: RequestAuthenticator
    authorizer: RequestAuthorizer
    router: Router


class Forwarder:
    """Handles requests for one waypoint; shared by every tunnel and HTTP version."""

    def __init__(
        self,
        state: ProxyState,
        policies: Policies,
        upstream: UpstreamClient,
        balancer: Balancer | None = None,
    ) -> None:
        self.state = state
        self.policies = policies
        self.upstream = upstream
        self.balancer = balancer or Balancer()
        self.clusters = Clusters()
        self.rng = random.Random()
        self.mirrors = Mirrors(state, upstream, self.balancer, self.version_to)
        self.tracing: Callable[[], Tracer | None] | None = None  # set by the waypoint
        self.backends = BackendViews(state)  # kept per ProxyState version
        self.fields = UpstreamFields()  # the upstream request's fields (a repeated head's kept)

    async def handle(
        self,
        target: Target,
        downstream: Downstream,
        head: RequestHead,
        body: Body,
        sink: ResponseSink,
        record: RequestRecord,
        pipe: DownstreamPipe | None = None,
    ) -> None:
        """Serve one request end to end and finish its record; never raises for request errors.

        ``pipe``: the client's side of an upgrade request (``proxy.upgrade``).
        Cancelled (the client reset its stream): the upstream exchange is cancelled too,
        the record is finished with ``DC``, and the cancellation propagates.
        """
        record.method, record.path, record.authority = head.method, head.path, head.authority
        record.grpc = grpc.is_grpc(head.header("content-type"))
        request_id = head.header("x-request-id") or request_uuid()
        record.request_id = request_id
        tracer = self.tracing() if self.tracing is not None else None
        trace = tracer.begin(head, request_id) if tracer is not None else None
        try:
            if head.upgrade is not None and head.upgrade.lower() not in upgrade.ALLOWED:
                record.details = "upgrade_failed"  # before any filter, as Envoy
                await local_reply(sink, record, 403, b"")
                return
            policies = self.policies
            admission = await admit(
                policies.authenticator, policies.authorizer, target, downstream, head
            )
            if admission.refusal is not None:
                refusal = admission.refusal
                record.details = refusal.details
                await local_reply(sink, record, refusal.status, refusal.body, refusal.headers)
                return
            head = admission.request
            decision, endpoint, cluster_size, affinity = self._route(
                target, downstream, head, record
            )
            if decision.response is not None:
                await direct(sink, record, decision.response, decision.response_headers)
                return
            if decision.fault is not None:
                roll = decision.fault.roll(self.rng)
                if roll.delay:
                    add_flag(record, "DI")
                    await asyncio.sleep(roll.delay)
                if roll.aborts:
                    add_flag(record, "FI")
                    await fault_abort(sink, record, roll)
                    return
            if endpoint is None:
                add_flag(record, "UH")
                await local_reply(sink, record, 503, b"no healthy upstream")
                return
            request = self._upstream_request(head, decision, request_id)
            if trace is not None:
                request = dataclasses.replace(
                    request, headers=trace.upstream_headers(request.headers)
                )
            if head.upgrade is not None:
                backend = decision.backend
                await upgrade.forward_upgrade(
                    self.upstream, self.balancer,
                    self.clusters.get(backend) if backend is not None else None,
                    endpoint, request, head.upgrade,
                    timeout=decision.timeout, from_http2=head.version == HTTP2,
                    sink=sink, pipe=pipe, record=record,
                )  # fmt: skip
                return
            if decision.mirrors:
                body = await self.mirrors.start(decision.mirrors, request, body, head.version)
            timeout = decision.timeout
            if record.grpc:
                timeout = grpc.deadline(timeout, grpc.parse_timeout(head.header("grpc-timeout")))
            exchange = PendingRequest(endpoint, cluster_size, request, body, decision, sink, record)
            exchange.affinity = affinity
            exchange.trace = trace
            try:
                if timeout:
                    exchange.expires = asyncio.get_running_loop().time() + timeout
                    async with asyncio.timeout(timeout):
                        await self._forward(exchange)
                else:
                    await self._forward(exchange)
            except TimeoutError:
                add_flag(record, "UT")
                if sink.started:
                    sink.abort()
                else:
                    await local_reply(sink, record, 504, b"upstream request timeout",
                                      grpc_status=grpc.DEADLINE_EXCEEDED)  # fmt: skip
        except DownstreamGone:
            record.flags = "DC"
            sink.abort()
        except asyncio.CancelledError:
            record.flags = "DC"
            raise
        finally:
            record.finish()
            if trace is not None and trace.sampled:
                trace.finish(record, record.cluster, target.port)

    # -- routing -------------------------------------------------------------------

    def pick(self, backend: Backend) -> Endpoint | None:
        """An endpoint of ``backend`` by its load balancer (L4 passthrough: ``proxy.tcp``)."""
        return self.balancer.pick(backend, self.backend_view(backend).endpoints)

    def backend_view(self, backend: Backend) -> BackendView:
        """The backend's service, cluster, endpoints and declared protocol (``proxy.backends``)."""
        return self.backends.get(backend)

    def _route(
        self, target: Target, downstream: Downstream, head: RequestHead, record: RequestRecord
    ) -> tuple[RouteDecision, Endpoint | None, int, Affinity | None]:
        """The decision, the first endpoint, how many endpoints the cluster has, and the
        request's consistent-hash key (None unless the backend hashes)."""
        if target.hostname is None:
            record.route = "default"
            workload = self.state.workload_by_ip(target.address)
            record.destination = workload
            if workload is None or not _usable(workload):
                return RouteDecision(route="default"), None, 0, None
            endpoint = Endpoint(workload, target.address, target.port)
            return RouteDecision(route="default"), endpoint, 1, None
        decision = self.policies.router.route(target, head)
        record.route = decision.route
        backend = decision.backend
        if backend is None:
            return decision, None, 0, None
        view = self.backend_view(backend)
        record.service = view.service
        record.cluster = view.cluster
        endpoints = view.endpoints
        candidates = self.clusters.get(backend).select(endpoints) if endpoints else endpoints
        affinity = None
        if backend.consistent_hash is not None:
            local = f"{target.address}:{target.port}"
            affinity = request_affinity(backend.consistent_hash, head, downstream, local)
        key = affinity.key if affinity is not None else None
        return decision, self.balancer.pick(backend, candidates, key), len(endpoints), affinity

    def _upstream_request(
        self, head: RequestHead, decision: RouteDecision, request_id: str
    ) -> UpstreamRequest:
        final = self.fields.fields(head.headers, decision.request_headers, request_id)
        backend = decision.backend
        if backend is None:
            version = head.version
        else:
            version = upstream_version(self.backend_view(backend).declared, head.version)
        return UpstreamRequest(
            method=head.method,
            target=decision.path or head.path,
            authority=decision.authority or head.authority,
            headers=final,
            version=version,
        )

    def version_to(self, backend: Backend, downstream: str) -> str:
        """The HTTP version to speak to ``backend`` for a ``downstream``-version request."""
        return upstream_version(self.backends.get(backend).declared, downstream)

    # -- the exchange, with retries ------------------------------------------------

    async def _forward(self, ex: PendingRequest) -> None:
        """Attempts until one is final (see ``resilience.retry``), then stream its response."""
        decision, record = ex.decision, ex.record
        retry = decision.retry
        backend = decision.backend
        cluster = self.clusters.get(backend) if backend is not None else None
        counted = CountingBody(ex.body, record)
        whole = counted.ready()  # the usual small body, all here: no replay buffer needed
        replay: ReplayableBody | WholeBody | None
        if whole is not None:
            replay = WholeBody(whole, counted)
        elif retry is not None and not ex.body.empty:
            replay = ReplayableBody(counted)
        else:
            replay = None
        sent: Body = replay if replay is not None else counted
        endpoint = ex.endpoint
        tried: list[Endpoint] = []
        retries = 0
        while True:
            tried.append(endpoint)
            record.destination = endpoint.workload
            record.upstream_addr = endpoint.address
            outcome = await self._attempt(
                endpoint, ex.attempt_request(), sent, decision, cluster, ex.trace, record.cluster
            )
            attempt, result = outcome.attempt, outcome.result
            if cluster is not None and attempt is not None:
                cluster.record(endpoint, attempt, ex.cluster_size)
            again = (
                retry is not None
                and attempt is not None
                and retry.retriable(attempt)
                and not counted.aborted
                and (replay is None or replay.replayable)
            )
            if again and retry is not None and retries >= retry.retries:
                add_flag(record, "URX")
                again = False
            if again and cluster is not None and not cluster.limits.try_retry():
                add_flag(record, "UO")  # Envoy: the retry budget (maxRetries) overflowed
                again = False
            if not again:
                if replay is not None:
                    replay.stop_keeping()
                cookie = ex.affinity.set_cookie if ex.affinity is not None else None
                await self._deliver(outcome, decision, ex.sink, record, counted.aborted, cookie)
                return
            assert retry is not None
            if isinstance(result, tuple):
                self.upstream.discard(result[1])
            if outcome.span is not None:
                outcome.span.finish()
            outcome.release()
            retries += 1
            try:
                await asyncio.sleep(retry.backoff_delay(retries, self.rng))
                key = ex.affinity.key if ex.affinity is not None else None
                next_endpoint = self._retry_endpoint(
                    decision, endpoint, tried, retry.other_hosts, key
                )
            finally:
                if cluster is not None:
                    cluster.limits.retry_done()
            if next_endpoint is None:
                add_flag(record, "UH")
                await local_reply(ex.sink, record, 503, b"no healthy upstream")
                return
            endpoint = next_endpoint
            if replay is not None:
                replay.rewind()
            log.debug("retry %d of %s %s to %s", retries, ex.request.method, ex.request.target,
                      endpoint.address)  # fmt: skip

    def _retry_endpoint(
        self,
        decision: RouteDecision,
        last: Endpoint,
        tried: list[Endpoint],
        other_hosts: bool,
        key: int | None = None,
    ) -> Endpoint | None:
        """Where a retry goes: preferably an endpoint not tried yet (Istio's default)."""
        backend = decision.backend
        if backend is None:
            return last  # a workload-addressed request: the same workload again
        endpoints = self.backend_view(backend).endpoints
        if not endpoints:
            return None
        candidates = self.clusters.get(backend).select(endpoints)
        if other_hosts:
            fresh = [e for e in candidates if e not in tried]
            candidates = fresh or candidates
        return self.balancer.pick(backend, candidates, key)

    async def _attempt(
        self,
        endpoint: Endpoint,
        request: UpstreamRequest,
        body: Body,
        decision: RouteDecision,
        cluster: ClusterState | None,
        trace: Trace | None = None,
        cluster_name: str = "",
    ) -> Outcome:
        """One try, until its response head; the outcome holds the request's slots."""
        outcome = Outcome(self.balancer, endpoint, cluster)
        span = None
        if trace is not None and trace.sampled:
            span = trace.attempt(cluster_name or "-", endpoint.address, request.version)
            if span is not None:
                headers = trace.upstream_headers(request.headers, span.span_id)
                request = dataclasses.replace(request, headers=headers)
                outcome.span = span
        if cluster is not None:
            try:
                if not cluster.limits.try_acquire():
                    await cluster.limits.acquire()  # wait for a slot
            except Overflow as exc:
                outcome.overflow = str(exc)
                return outcome
            outcome.holds_slot = True
        self.balancer.started(endpoint)
        outcome.started = True
        retry = decision.retry
        per_try = retry.per_try_timeout if retry is not None else None
        settings = cluster.connections if cluster is not None else ConnectionSettings()
        try:
            if per_try:
                async with asyncio.timeout(per_try):
                    result = await self.upstream.send(endpoint, request, body, settings)
            else:
                result = await self.upstream.send(endpoint, request, body, settings)
        except UpstreamFailed as exc:
            if exc.flag == "UF":
                failure = Failure.CONNECT
            else:
                failure = Failure.REFUSED if exc.refused else Failure.RESET
            outcome.attempt = Attempt(failure=failure)
            outcome.result = exc
            if span is not None:
                Trace.attempt_result(span, 0, exc.flag)
                span.finish()
            return outcome
        except TimeoutError:
            outcome.attempt = Attempt(failure=Failure.TIMEOUT)
            if span is not None:
                Trace.attempt_result(span, 0, "UT")
                span.finish()
            return outcome
        except BaseException:
            outcome.release()
            raise
        response = result[0]
        grpc_status = next((v for k, v in response.headers if k == "grpc-status"), "")
        outcome.attempt = Attempt(response.status, grpc_status)
        outcome.result = result
        if span is not None:
            Trace.attempt_result(span, response.status)
        return outcome

    async def _deliver(
        self,
        outcome: Outcome,
        decision: RouteDecision,
        sink: ResponseSink,
        record: RequestRecord,
        client_gone: bool,
        set_cookie: str | None = None,
    ) -> None:
        """Send the final attempt's answer downstream, then free its slots."""
        try:
            result = outcome.result
            if outcome.overflow is not None:
                add_flag(record, "UO")
                record.details = f"upstream_overflow ({outcome.overflow})"
                await local_reply(sink, record, 503, OVERFLOW)
                return
            if result is None:  # the per-try timeout fired before a response head
                add_flag(record, "UT")
                await local_reply(sink, record, 504, b"upstream request timeout",
                                  grpc_status=grpc.DEADLINE_EXCEEDED)  # fmt: skip
                return
            if isinstance(result, UpstreamFailed):
                add_flag(record, result.flag)
                record.details = str(result)
                if client_gone:
                    record.flags = "DC"
                    sink.abort()
                    return
                if result.flag == "UF":
                    message = CONNECT_FAILURE
                elif result.flag == "UR":
                    message = str(result).encode()
                else:
                    message = TERMINATION
                await local_reply(sink, record, 503, message)
                return
            response, response_body = result
            record.status = response.status
            record.grpc_status = next((v for k, v in response.headers if k == "grpc-status"), "")
            headers = decision.response_headers.apply(response.headers)
            if set_cookie is not None:  # consistentHash made the client a cookie (Envoy's)
                headers = (*headers, ("set-cookie", set_cookie))
            try:
                if response_body.empty:
                    await sink.send_head(ResponseHead(response.status, headers), end=True)
                    return
                whole = response_body.ready()  # the usual small answer: head and body in one write
                if whole is not None:
                    record.response_bytes += len(whole)
                    trailers = response_body.trailers
                    if trailers and not record.grpc_status:
                        record.grpc_status = next(
                            (v for k, v in trailers if k == "grpc-status"), ""
                        )
                    await sink.send_whole(ResponseHead(response.status, headers), whole, trailers)
                    return
                await sink.send_head(ResponseHead(response.status, headers), end=False)
                while chunk := await response_body.read():
                    record.response_bytes += len(chunk)
                    await sink.send_data(chunk)
            except BodyAborted as exc:
                add_flag(record, "UC")
                record.details = str(exc)
                sink.abort()
                return
            except BaseException:  # the client went away (or this task was cancelled)
                self.upstream.discard(response_body)
                raise
            trailers = response_body.trailers
            if trailers and not record.grpc_status:
                record.grpc_status = next((v for k, v in trailers if k == "grpc-status"), "")
            await sink.end(trailers)
        finally:
            outcome.release()

    async def close(self) -> None:
        await self.mirrors.close()


def _usable(workload: Workload) -> bool:
    return (
        workload.status is WorkloadStatus.HEALTHY
        and workload.tunnel_protocol is TunnelProtocol.HBONE
        and bool(workload.addresses)
    )
