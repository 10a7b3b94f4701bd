"""One request through the waypoint, whatever its HTTP version: authenticate, authorize, route, forward.

Order as in Envoy's waypoint filter chain: RequestAuthentication (invalid
token -> 401), L7 AuthorizationPolicy (denied -> 403 ``RBAC: access denied``),
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
- Route timeout (``RouteDecision.timeout``) covers the whole exchange until
  the response is complete: before the response head it is ``504 upstream
  request timeout`` (flag ``UT``); after, the downstream stream is reset.
- Mirrors: fire-and-forget copies to the mirror backend with ``-shadow``
  appended to the authority (as Envoy); their responses are discarded and
  never delay the main request. A request body is teed only when its
  Content-Length is at most ``MIRROR_BODY_LIMIT`` (64 KiB, read in full
  first); requests with larger or unknown-length bodies are not mirrored.
- Error answers are Envoy's: 503 ``no healthy upstream`` (UH), 503
  ``upstream connect error or disconnect/reset before headers. reset reason:
  connection failure`` (UF), 503 ... ``connection termination`` (UC), 504
  ``upstream request timeout`` (UT); a direct 404 is logged with ``NR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass

from ambient.api.workload import TunnelProtocol, Workload, WorkloadStatus
from ambient.waypoint.model import (
    Backend,
    DirectResponse,
    Downstream,
    HeaderOps,
    Headers,
    Mirror,
    RequestAuthenticator,
    RequestAuthorizer,
    RequestHead,
    RouteDecision,
    Router,
    Target,
)
from ambient.waypoint.proxy.accesslog import RequestRecord
from ambient.waypoint.proxy.balancer import Balancer, Endpoint, endpoints_of
from ambient.waypoint.proxy.messages import (
    Body,
    BodyAborted,
    BytesBody,
    DownstreamGone,
    ResponseHead,
    ResponseSink,
    strip_hop_by_hop,
)
from ambient.waypoint.proxy.upstream import UpstreamClient, UpstreamFailed, UpstreamRequest
from ambient.ztunnel.state import ProxyState

log = logging.getLogger("ambient.waypoint")

MIRROR_BODY_LIMIT = 64 * 1024
RBAC_DENIED = b"RBAC: access denied"
_TEXT = (("content-type", "text/plain"),)


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
        self._mirrors: set[asyncio.Task[None]] = set()

    async def handle(
        self,
        target: Target,
        downstream: Downstream,
        head: RequestHead,
        body: Body,
        sink: ResponseSink,
        record: RequestRecord,
    ) -> None:
        """Serve one request end to end and finish its record; never raises for request errors."""
        record.method, record.path, record.authority = head.method, head.path, head.authority
        record.grpc = (head.header("content-type") or "").startswith("application/grpc")
        request_id = head.header("x-request-id") or str(uuid.uuid4())
        record.request_id = request_id
        endpoint: Endpoint | None = None
        try:
            authn = await self.policies.authenticator.authenticate(target, head)
            if authn.failure is not None:
                record.details = "jwt_authn_access_denied"
                challenge = (
                    "www-authenticate",
                    'Bearer realm="http://%s%s", error="invalid_token"',
                )
                value = challenge[1] % (head.authority, head.path_only)
                await self._local(
                    sink, record, 401, authn.failure.encode(), ((challenge[0], value),)
                )
                return
            if authn.headers is not None:
                head = _with_headers(head, authn.headers)
            verdict = self.policies.authorizer.check(target, downstream, head, authn.principal)
            if not verdict.allowed:
                record.details = f"rbac_access_denied_matched_policy[{verdict.policy or 'none'}]"
                await self._local(sink, record, 403, RBAC_DENIED)
                return
            decision, endpoint = self._route(target, head, record)
            if decision.response is not None:
                await self._direct(sink, record, decision.response, decision.response_headers)
                return
            if endpoint is None:
                record.flags = "UH"
                await self._local(sink, record, 503, b"no healthy upstream")
                return
            request = self._upstream_request(head, decision, request_id)
            if decision.mirrors:
                body = await self._mirror(decision.mirrors, request, body)
            self.balancer.started(endpoint)
            try:
                if decision.timeout:
                    async with asyncio.timeout(decision.timeout):
                        await self._exchange(endpoint, request, body, decision, sink, record)
                else:
                    await self._exchange(endpoint, request, body, decision, sink, record)
            except TimeoutError:
                record.flags = "UT"
                if sink.started:
                    sink.abort()
                else:
                    await self._local(sink, record, 504, b"upstream request timeout")
            finally:
                self.balancer.finished(endpoint)
        except DownstreamGone:
            record.flags = "DC"
            sink.abort()
        finally:
            record.finish()

    # -- routing -------------------------------------------------------------------

    def _route(
        self, target: Target, head: RequestHead, record: RequestRecord
    ) -> tuple[RouteDecision, Endpoint | None]:
        if target.hostname is None:
            record.route = "default"
            workload = self.state.workload_by_ip(target.address)
            record.destination = workload
            if workload is None or not _usable(workload):
                return RouteDecision(route="default"), None
            return RouteDecision(route="default"), Endpoint(workload, target.address, target.port)
        decision = self.policies.router.route(target, head)
        record.route = decision.route
        backend = decision.backend
        if backend is None:
            return decision, None
        record.service = self.state.services.get(backend.service_key)
        endpoint = self.balancer.pick(backend, endpoints_of(self.state, backend))
        if endpoint is not None:
            record.destination = endpoint.workload
            record.upstream_addr = endpoint.address
        return decision, endpoint

    def _upstream_request(
        self, head: RequestHead, decision: RouteDecision, request_id: str
    ) -> UpstreamRequest:
        headers = list(strip_hop_by_hop(head.headers))
        headers = [(k, v) for k, v in headers if k != "host" and k != "x-request-id"]
        cookies = [v for k, v in headers if k == "cookie"]
        if len(cookies) > 1:  # HTTP/2 splits cookies; HTTP/1.1 wants one field (RFC 9113 8.2.3)
            headers = [(k, v) for k, v in headers if k != "cookie"]
            headers.append(("cookie", "; ".join(cookies)))
        headers.append(("x-request-id", request_id))
        if not any(k == "x-forwarded-proto" for k, _ in headers):
            headers.append(("x-forwarded-proto", "http"))
        final = decision.request_headers.apply(tuple(headers))
        return UpstreamRequest(
            method=head.method,
            target=decision.path or head.path,
            authority=decision.authority or head.authority,
            headers=final,
        )

    # -- the exchange ----------------------------------------------------------------

    async def _exchange(
        self,
        endpoint: Endpoint,
        request: UpstreamRequest,
        body: Body,
        decision: RouteDecision,
        sink: ResponseSink,
        record: RequestRecord,
    ) -> None:
        counted = _CountingBody(body, record)
        try:
            response, response_body = await self.upstream.send(endpoint, request, counted)
        except UpstreamFailed as exc:
            record.flags = exc.flag
            record.details = str(exc)
            message = (
                b"upstream connect error or disconnect/reset before headers. "
                b"reset reason: connection failure"
                if exc.flag == "UF"
                else b"upstream connect error or disconnect/reset before headers. "
                b"reset reason: connection termination"
            )
            if counted.aborted:
                record.flags = "DC"
                sink.abort()
                return
            await self._local(sink, record, 503, message)
            return
        record.status = response.status
        record.grpc_status = next((v for k, v in response.headers if k == "grpc-status"), "")
        headers = decision.response_headers.apply(response.headers)
        await sink.send_head(ResponseHead(response.status, headers), end=response_body.empty)
        if response_body.empty:
            return
        try:
            while chunk := await response_body.read():
                record.response_bytes += len(chunk)
                await sink.send_data(chunk)
        except BodyAborted as exc:
            record.flags = "UC"
            record.details = str(exc)
            sink.abort()
            return
        await sink.end()

    # -- local answers ----------------------------------------------------------------

    async def _local(
        self,
        sink: ResponseSink,
        record: RequestRecord,
        status: int,
        body: bytes,
        headers: Headers = (),
    ) -> None:
        record.status = status
        if sink.started:
            sink.abort()
            return
        all_headers = (*_TEXT, ("content-length", str(len(body))), *headers)
        record.response_bytes = len(body)
        await sink.send_head(ResponseHead(status, all_headers), end=not body, close=True)
        if body:
            await sink.send_data(body)
            await sink.end()

    async def _direct(
        self, sink: ResponseSink, record: RequestRecord, response: DirectResponse, ops: HeaderOps
    ) -> None:
        if response.status == 404:
            record.flags = "NR"
        headers = ops.apply((*response.headers, ("content-length", str(len(response.body)))))
        record.status = response.status
        record.response_bytes = len(response.body)
        await sink.send_head(
            ResponseHead(response.status, headers), end=not response.body, close=True
        )
        if response.body:
            await sink.send_data(response.body)
            await sink.end()

    # -- mirrors -------------------------------------------------------------------------

    async def _mirror(
        self, mirrors: tuple[Mirror, ...], request: UpstreamRequest, body: Body
    ) -> Body:
        """Start the mirrored copies; returns the body to use for the main request."""
        if not body.empty and (body.length is None or body.length > MIRROR_BODY_LIMIT):
            log.debug("not mirroring %s %s: body too big to tee", request.method, request.target)
            return body
        data = b""
        if not body.empty:
            parts = []
            while chunk := await body.read():
                parts.append(chunk)
            data = b"".join(parts)
        for mirror in mirrors:
            if mirror.percent < 100 and random.random() * 100 >= mirror.percent:
                continue
            task = asyncio.ensure_future(self._send_mirror(mirror.backend, request, data))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        return BytesBody(data) if not body.empty else body

    async def _send_mirror(self, backend: Backend, request: UpstreamRequest, data: bytes) -> None:
        endpoint = self.balancer.pick(backend, endpoints_of(self.state, backend))
        if endpoint is None:
            return
        authority = request.authority
        host, sep, port = authority.rpartition(":")
        shadow = f"{host}-shadow:{port}" if sep and port.isdigit() else f"{authority}-shadow"
        copy = UpstreamRequest(request.method, request.target, shadow, request.headers)
        try:
            _, response_body = await self.upstream.send(endpoint, copy, BytesBody(data))
            while await response_body.read():
                pass
        except (UpstreamFailed, BodyAborted) as exc:
            log.debug("mirror to %s failed: %s", endpoint.address, exc)

    async def close(self) -> None:
        for task in list(self._mirrors):
            task.cancel()
        for task in list(self._mirrors):
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _CountingBody:
    """Counts request body bytes into the record and notes a client that went away."""

    def __init__(self, body: Body, record: RequestRecord) -> None:
        self._body = body
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
        self._record.request_bytes += len(chunk)
        return chunk

    def ready(self) -> bytes | None:
        data = self._body.ready()
        if data is not None:
            self._record.request_bytes += len(data)
        return data


def _with_headers(head: RequestHead, headers: Headers) -> RequestHead:
    return RequestHead(head.method, head.authority, head.path, headers, head.scheme)


def _usable(workload: Workload) -> bool:
    return (
        workload.status is WorkloadStatus.HEALTHY
        and workload.tunnel_protocol is TunnelProtocol.HBONE
        and bool(workload.addresses)
    )
