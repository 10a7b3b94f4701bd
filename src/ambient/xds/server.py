"""``XdsServer``: the control plane's workload API over Istio's delta ADS (istiod's side).

One gRPC service, ``envoy.service.discovery.v3.AggregatedDiscoveryService``; only
``DeltaAggregatedResources`` is served (ztunnel uses nothing else). Per stream:

- The first request names the node (``node.metadata.NODE_NAME``, else ``node.id``);
  the stream follows ``ControlPlane.subscribe(node)``.
- Each type (``istio.workload.Address``, ``istio.security.Authorization``, and
  ambient's own ``ambient.xds.v1.WaypointResource``) is its own wildcard subscription, opened by the first request of that type. It is answered
  with every resource (even none, so the client knows it is synced) except those
  whose version the client already reported in ``initial_resource_versions``; names
  the client reported that no longer exist are sent as removed. Explicit resource
  names (on-demand) are not supported: such a subscription is served as a wildcard.
- Then each change of the plane is one push, only the resources whose version
  changed. Order within a push: WaypointResource upserts, Address upserts, then
  Authorization upserts and removals, then Address removals, then WaypointResource
  removals; so a ztunnel never holds a policy that refers to something it does not
  know, drops policies before what they applied to, and a waypoint it hosts has the
  L7 objects of a change before the addresses that bind traffic to it (and keeps
  them until after the addresses that stop doing so).
- Versions are content hashes of the encoded resource: deterministic, so a client
  that reconnects (even to a restarted server) is sent only what differs.
- Scale: every stream sees the whole mesh (as istiod serves ztunnel), so the mesh is
  encoded once, at start and then per change, into one published view shared by all
  streams (``published.Published``), with a log of the names each change touched. A stream
  keeps only the revision its client holds and sends the names touched since; a
  first connection gets the full state serialized once per revision. A stream that
  falls further behind than the log is ended, and its client's reconnect (with
  ``initial_resource_versions``) brings it up to date exactly.
- A NACK (``error_detail`` set) is logged with the node, type, nonce and reason; the
  rejected version is not resent, and later versions are pushed as usual.

Waypoint configuration (``WaypointResource``, one per L7 object: HTTPRoute,
VirtualService, DestinationRule, RequestAuthentication, targetRef'd
AuthorizationPolicy, named ``Kind/namespace/name``; ``ambient.config.l7objects``)
is ambient's own type: a client that never subscribes to it (Istio's ztunnel) is
sent nothing of it. Every node proxy that subscribes gets every L7 object, not only
those of the waypoints it hosts: the simplest correct choice (as for addresses, a
node's waypoints can change with any push, and the objects are small), at the cost
of some bytes per node; scoping it per node is a later optimisation.

Policies travel the Istio way (``ambient.xds.policies``): each workload lists the
selector policies and the synthetic PeerAuthentication DENY that apply to it in
``authorization_policies`` (filled here), and PeerAuthentications are sent as
istiod's synthetic Authorizations. Selector policies keep their labels in ambient's
extension as well, which Istio ztunnels ignore.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from ambient.controlplane.plane import ControlPlane
from ambient.controlplane.policies import ROOT_NAMESPACE
from ambient.controlplane.source import NotAuthorized
from ambient.identity.callers import Unauthenticated
from ambient.xds.codec import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    WAYPOINT_TYPE_URL,
)
from ambient.xds.proto import core_pb2, discovery_pb2
from ambient.xds.published import TYPE_URLS, EncodeCache, Published

__all__ = ["SERVICE", "NodeAuthorizer", "XdsServer"]

log = logging.getLogger("ambient.xds")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
CONTROL_PLANE_ID = "ambient"
# Let clients ping every 15 s or more to detect a dead server (ztunnel and XdsClient
# do), even while nothing is pushed.
KEEPALIVE_POLICY = (
    ("grpc.http2.min_ping_interval_without_data_ms", 15_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
_PENDING_NONCES = 64  # per stream: older unanswered nonces are forgotten (stale)
_FULL_WRITES = 8
_RECHECKS: set[asyncio.Future[None]] = set()  # asynchronous re-checks in flight

# Called with the stream's context and the node the client claims (it may be a
# coroutine); raises NotAuthorized (PERMISSION_DENIED) or Unauthenticated
# (UNAUTHENTICATED) to refuse the stream: node certificates, or a node's token.
NodeAuthorizer = Callable[[Any, str], Awaitable[None] | None]


class XdsObserver(Protocol):
    """What counts pushes and NACKs (``ambient.monitoring.metrics.ControlPlaneMetrics``)."""

    def xds_pushed(self, type_url: str, seconds: float) -> None: ...
    def xds_rejected(self, type_url: str) -> None: ...


def _short(type_url: str) -> str:
    return type_url.rpartition("/")[2]


def _node_name(node: core_pb2.Node) -> str:
    """The node a ztunnel runs on: ``NODE_NAME`` metadata (as ztunnel sends), else the id."""
    value = node.metadata.fields.get("NODE_NAME")
    if value is not None and value.WhichOneof("kind") == "string_value" and value.string_value:
        return value.string_value
    return node.id


def _serialize(response: discovery_pb2.DeltaDiscoveryResponse | bytes) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


class _Stream:
    """One ``DeltaAggregatedResources`` call."""

    def __init__(self, server: XdsServer, context: Any) -> None:
        self._server = server
        self._context = context
        self.node = ""
        self._subscribed: set[str] = set()
        self._rev: dict[str, int] = {}  # type -> the published rev the client holds
        self._pending: dict[str, str] = {}  # nonce -> type, awaiting ACK/NACK
        self._warned: set[str] = set()
        self._closed = asyncio.Event()
        self._refusal: str | None = None  # why the stream is being ended, if refused

    async def serve(self) -> None:
        first = await self._read()
        if first is None:
            return
        self.node = _node_name(first.node)
        if not self.node:
            await self._context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first DeltaDiscoveryRequest must carry node.id (or NODE_NAME metadata)",
            )
        if self._server.authorize_node is not None:
            try:
                verdict = self._server.authorize_node(self._context, self.node)
                if inspect.isawaitable(verdict):
                    await verdict
            except (NotAuthorized, Unauthenticated) as exc:
                log.warning("xDS stream refused for node %s: %s", self.node, exc)
                code = grpc.StatusCode.PERMISSION_DENIED
                if isinstance(exc, Unauthenticated):
                    code = grpc.StatusCode.UNAUTHENTICATED
                await self._context.abort(code, str(exc))
        # The subscription wakes the stream on changes (and ends it when the plane
        # closes); what to send comes from the published view, shared by all streams.
        subscription = self._server.plane.subscribe(self.node)
        waiters: list[asyncio.Task[Any]] = []
        log.info("xDS stream opened by node %s (%s)", self.node, self._context.peer())
        try:
            await anext(subscription)
            self._server.published.catch_up()
            await self._on_request(first)
            read = asyncio.ensure_future(self._read())
            push = asyncio.ensure_future(anext(subscription, None))
            closed = asyncio.ensure_future(self._closed.wait())
            waiters = [read, push, closed]
            while not closed.done():
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if read.done():
                    request = read.result()
                    if request is None:
                        break  # the client closed its side
                    await self._on_request(request)
                    read = waiters[0] = asyncio.ensure_future(self._read())
                if push.done():
                    if push.result() is None:
                        break  # the plane ended the subscription
                    self._server.published.catch_up()
                    await self._push()
                    push = waiters[1] = asyncio.ensure_future(anext(subscription, None))
            if self._refusal is not None:
                await self._context.abort(grpc.StatusCode.PERMISSION_DENIED, self._refusal)
        finally:
            subscription.close()
            for task in waiters:
                task.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            log.info("xDS stream of node %s closed", self.node)

    def close(self, refusal: str | None = None) -> None:
        """End the stream: with OK (clients reconnect), or PERMISSION_DENIED and ``refusal``."""
        self._refusal = refusal
        self._closed.set()

    def still_authorized(self) -> bool:
        """Run the node check again (the node may have been revoked); close if it fails."""
        check = self._server.authorize_node
        if check is None or not self.node or self._closed.is_set():
            return True
        try:
            verdict = check(self._context, self.node)
        except NotAuthorized as exc:
            log.warning("xDS stream of node %s ended: %s", self.node, exc)
            self.close(str(exc))
            return False
        if inspect.isawaitable(verdict):  # decided later: the stream ends then if refused
            task = asyncio.ensure_future(self._recheck(verdict))
            _RECHECKS.add(task)
            task.add_done_callback(_RECHECKS.discard)
        return True

    async def _recheck(self, verdict: Awaitable[None]) -> None:
        try:
            await verdict
        except (NotAuthorized, Unauthenticated) as exc:
            log.warning("xDS stream of node %s ended: %s", self.node, exc)
            self.close(str(exc))

    async def _read(self) -> discovery_pb2.DeltaDiscoveryRequest | None:
        request = await self._context.read()
        if request is grpc.aio.EOF:
            return None
        assert isinstance(request, discovery_pb2.DeltaDiscoveryRequest)
        return request

    def _warn_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args)

    async def _on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        if request.response_nonce:
            self._on_reply(request)
        if type_url not in TYPE_URLS:
            self._warn_once(
                type_url,
                "node %s subscribed to %r, which is not served; ignored",
                self.node,
                type_url,
            )
            return
        explicit = [n for n in request.resource_names_subscribe if n != "*"]
        if explicit or request.resource_names_unsubscribe:
            self._warn_once(
                f"names {type_url}",
                "node %s asked for specific %s names; only wildcard subscriptions are "
                "served, so it receives every resource",
                self.node,
                _short(type_url),
            )
        if type_url in self._subscribed:
            return
        self._subscribed.add(type_url)
        published = self._server.published
        published.catch_up()
        current = published.view.resources[type_url]
        self._rev[type_url] = published.rev
        initial = dict(request.initial_resource_versions)
        if not initial:  # a first connection: everything, serialized once for all streams
            log.debug(
                "node %s subscribed to %s: %d resources to send",
                self.node,
                _short(type_url),
                len(current),
            )
            await self._write(type_url, [], [], everything=published.everything(type_url))
            return
        upserts = [
            current[name] for name in sorted(current) if initial.get(name) != current[name].version
        ]
        removals = sorted(name for name in initial if name not in current)
        log.debug(
            "node %s subscribed to %s: %d resources to send, %d up to date, %d removed",
            self.node,
            _short(type_url),
            len(upserts),
            len(current) - len(upserts),
            len(removals),
        )
        await self._write(type_url, upserts, removals)  # even empty: the client is synced

    def _on_reply(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        nonce = request.response_nonce
        type_url = self._pending.pop(nonce, None)
        if type_url is None:
            log.debug("node %s answered an unknown or stale nonce %s", self.node, nonce)
            return
        if request.HasField("error_detail"):
            self._server.nacks += 1
            if self._server.observer is not None:
                self._server.observer.xds_rejected(type_url)
            log.warning(
                "xDS NACK from node %s for %s nonce %s: %s (not resent; later versions will be)",
                self.node,
                _short(type_url),
                nonce,
                request.error_detail.message or f"code {request.error_detail.code}",
            )
        else:
            log.debug("xDS ACK from node %s for %s nonce %s", self.node, _short(type_url), nonce)

    def _changes(self, type_url: str) -> tuple[list[discovery_pb2.Resource], list[str]] | None:
        """What the client lacks of ``type_url`` since its rev; None if that is unknown."""
        published = self._server.published
        names = published.names_since(self._rev[type_url], type_url)
        if names is None:
            return None
        current = published.view.resources[type_url]
        upserts, removals = [], []
        for name in sorted(names):
            resource = current.get(name)
            if resource is None:
                removals.append(name)
            else:
                upserts.append(resource)
        return upserts, removals

    async def _push(self) -> None:
        changes = {t: self._changes(t) for t in TYPE_URLS if t in self._subscribed}
        if any(change is None for change in changes.values()):
            # Too far behind the log to know what the client holds: end the stream; the
            # client reconnects with initial_resource_versions and gets exactly that.
            log.warning("node %s fell too far behind; ending its xDS stream", self.node)
            self.close()
            return
        addr_up, addr_rm = changes.get(ADDRESS_TYPE_URL) or ([], [])
        pol_up, pol_rm = changes.get(AUTHORIZATION_TYPE_URL) or ([], [])
        l7_up, l7_rm = changes.get(WAYPOINT_TYPE_URL) or ([], [])
        plan: list[tuple[str, list[discovery_pb2.Resource], list[str]]] = [
            (WAYPOINT_TYPE_URL, l7_up, [])
        ]
        if (pol_up or pol_rm) and addr_rm:
            plan += [
                (ADDRESS_TYPE_URL, addr_up, []),
                (AUTHORIZATION_TYPE_URL, pol_up, pol_rm),
                (ADDRESS_TYPE_URL, [], addr_rm),
            ]
        else:
            plan += [
                (ADDRESS_TYPE_URL, addr_up, addr_rm),
                (AUTHORIZATION_TYPE_URL, pol_up, pol_rm),
            ]
        plan.append((WAYPOINT_TYPE_URL, [], l7_rm))
        rev = self._server.published.rev
        for type_url in changes:
            self._rev[type_url] = rev
        for type_url, upserts, removals in plan:
            if upserts or removals:
                await self._write(type_url, upserts, removals)

    async def _write(
        self,
        type_url: str,
        upserts: list[discovery_pb2.Resource],
        removals: list[str],
        *,
        everything: bytes = b"",
    ) -> None:
        started = time.perf_counter()
        nonce = self._server.next_nonce()
        response = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url,
            resources=upserts,
            removed_resources=removals,
            nonce=nonce,
            control_plane=core_pb2.ControlPlane(identifier=CONTROL_PLANE_ID),
        )
        if everything:
            async with self._server.full_writes:
                await self._context.write(everything + response.SerializeToString())
        else:
            await self._context.write(response)
        if self._server.observer is not None:
            self._server.observer.xds_pushed(type_url, time.perf_counter() - started)
        self._pending[nonce] = type_url
        while len(self._pending) > _PENDING_NONCES:
            del self._pending[next(iter(self._pending))]
        log.debug(
            "sent node %s %s nonce %s: %d upserted, %d removed%s",
            self.node,
            _short(type_url),
            nonce,
            len(upserts),
            len(removals),
            " (everything)" if everything else "",
        )


class XdsServer:
    """Serves ``plane`` over delta ADS to ztunnels (see the module docstring).

    ``credentials``: gRPC server credentials (TLS), or None for plaintext (tests, a
    local mesh). ``authorize_node`` (optional) may refuse a stream for the node it
    claims, by raising ``NotAuthorized``.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        credentials: grpc.ServerCredentials | None,
        authorize_node: NodeAuthorizer | None = None,
        root_namespace: str = ROOT_NAMESPACE,
    ) -> None:
        self.plane = plane
        self.credentials = credentials
        self.authorize_node = authorize_node
        self.root_namespace = root_namespace
        self._streams: set[_Stream] = set()
        self.encode_cache = EncodeCache()  # one encoding per resource, shared by all streams
        self.published = Published(plane, root_namespace, self.encode_cache)
        # Full-state responses being handed to gRPC at once (each is a copy of the mesh).
        self.full_writes = asyncio.Semaphore(_FULL_WRITES)
        self.nacks = 0  # NACKs received, for tests and metrics
        self.observer: XdsObserver | None = None  # counts pushes and NACKs (monitoring)
        self._server: Any = None
        self._port = 0
        self._boot = secrets.token_hex(4)
        self._nonces = itertools.count(1)

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        return self._port

    @property
    def nodes(self) -> list[str]:
        """Nodes with an open stream (sorted; a node may have several)."""
        return sorted(s.node for s in self._streams if s.node)

    def next_nonce(self) -> str:
        return f"{self._boot}-{next(self._nonces)}"

    def recheck_nodes(self) -> int:
        """Check every open stream's node again (after a revocation); returns how many ended."""
        return sum(not stream.still_authorized() for stream in list(self._streams))

    async def _serve_stream(self, _requests: Any, context: Any) -> None:
        stream = _Stream(self, context)
        self._streams.add(stream)
        try:
            await stream.serve()
        finally:
            self._streams.discard(stream)

    async def start(self, address: str = "127.0.0.1:0") -> int:
        """Listen on ``address`` (``host:port``; port 0 picks one); returns the port."""
        if self._server is not None:
            raise RuntimeError("XdsServer is already started")
        # No SO_REUSEPORT (gRPC's default): a second server, or another process given the
        # same ephemeral port, would silently share this port's connections.
        server = grpc.aio.server(options=(*KEEPALIVE_POLICY, ("grpc.so_reuseport", 0)))
        handler = grpc.stream_stream_rpc_method_handler(
            self._serve_stream,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_serialize,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"DeltaAggregatedResources": handler}),)
        )
        try:
            if self.credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self.credentials)
        except RuntimeError as exc:
            raise OSError(f"xDS server cannot listen on {address}: {exc}") from exc
        if not port:
            raise OSError(f"xDS server cannot listen on {address}")
        self.published.catch_up()  # encode the mesh now, not when the first ztunnel connects
        await server.start()
        self._server, self._port = server, int(port)
        log.info(
            "xDS server listening on %s (port %d, %s)",
            address,
            self._port,
            "TLS" if self.credentials is not None else "plaintext",
        )
        return self._port

    async def stop(self, grace: float = 1.0) -> None:
        """End every stream, then stop listening (RPCs still running after ``grace`` are cancelled)."""
        server, self._server = self._server, None
        if server is None:
            return
        for stream in list(self._streams):
            stream.close()
        await server.stop(grace)
        log.info("xDS server on port %d stopped", self._port)
