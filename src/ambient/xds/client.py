"""``XdsClient``: a ztunnel's side of Istio's delta ADS, feeding a ``ProxyState``.

As istio/ztunnel's ``src/xds/client.rs`` does: one ``DeltaAggregatedResources``
stream, a wildcard subscription to ``istio.workload.Address`` then to
``istio.security.Authorization`` (each request carrying the node), every response
ACKed or NACKed by nonce, and on reconnect ``initial_resource_versions`` listing what
it holds (with the versions, so a server that hashes content resends only what
differs). Differences from ztunnel, on purpose:

- A response is all or nothing: if any resource in it cannot be decoded, it is
  NACKed (``error_detail`` names each resource and the reason) and none of it is
  applied; ztunnel applies the rest. Each accepted response is one
  ``ProxyState.apply``, so lookups never see half of it.
- A resource whose name is not the one its content implies (workload uid,
  ``namespace/hostname``, ``namespace/name``) is rejected: removals are by name.

Waypoint configuration (ambient's own ``ambient.xds.v1.WaypointResource``, one L7
object's manifest each) is subscribed to only when the client is given an ``l7``
sink (``ambient.waypoint.config.L7Config``: the node proxy hosts waypoints), and is
requested first: on a first connection, and on a reconnect, the L7 objects arrive
before the addresses, and ``synced`` waits for all three types, so a waypoint is
never started before it knows what to enforce. Each response of that type is
handed to ``l7.apply`` whole; a manifest it refuses (``ValueError``, naming the
resource and the loader's problems) NACKs the response and nothing of it applies.

Policies arrive attached by name (``ambient.xds.policies``), so the client installs a
``ByNamePolicyStore`` as the state's ``policies`` (the client owns the state's contents
from then on): a ztunnel fed over xDS then decides exactly as one fed in-process.

While the control plane is unreachable the last applied state stays in force; the
outage is logged once ("control plane unreachable, keeping last config") and the
client reconnects with exponential back-off (``backoff``: first and longest delay,
with jitter), reset once a stream delivers again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

from ambient.authz.model import Authorization
from ambient.identity.tokensource import TokenError
from ambient.state.proxy import ProxyState
from ambient.state.workload import Service, Workload
from ambient.xds.attached import ByNamePolicyStore
from ambient.xds.codec import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    WAYPOINT_TYPE_URL,
    DecodeError,
    address_from_proto,
    authorization_from_proto,
)
from ambient.xds.proto import (
    authorization_pb2,
    core_pb2,
    discovery_pb2,
    extensions_pb2,
    workload_pb2,
)

if TYPE_CHECKING:
    from ambient.xds.subscription import XdsSubscription

__all__ = ["L7Sink", "XdsClient"]

log = logging.getLogger("ambient.xds")

TYPE_URLS = (ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL)  # what every ztunnel subscribes to
METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a full push of a large mesh is one message
# A dead control plane (no FIN, e.g. a partition) is noticed within about 40 s.
KEEPALIVE = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)
_INVALID_ARGUMENT = 3  # google.rpc.Code, in a NACK's error_detail


def _short(type_url: str) -> str:
    return type_url.rpartition("/")[2]


class L7Sink(Protocol):
    """Where waypoint configuration goes (``ambient.waypoint.config.L7Config``)."""

    def apply(self, upserted: Mapping[str, str], removed: Iterable[str]) -> None:
        """Apply manifests by xDS name; raise ``ValueError`` to refuse all of them."""


class _Rejected(Exception):
    """A response the client NACKs; the message is the NACK's error detail."""


def _unpack(resource: discovery_pb2.Resource, type_url: str, message: Message) -> None:
    if not resource.HasField("resource"):
        raise DecodeError("the resource is empty")
    if resource.resource.type_url != type_url:
        raise DecodeError(f"it carries {resource.resource.type_url or 'no type'}, not {type_url}")
    try:
        message.ParseFromString(resource.resource.value)
    except ProtoDecodeError as exc:
        raise DecodeError(f"malformed {_short(type_url)}: {exc}") from None


def _decode_address(resource: discovery_pb2.Resource) -> Workload | Service:
    message = workload_pb2.Address()
    _unpack(resource, ADDRESS_TYPE_URL, message)
    address = address_from_proto(message)
    name = address.uid if isinstance(address, Workload) else address.key
    if name != resource.name:
        raise DecodeError(f"it describes {name!r}")
    return address


def _decode_authorization(resource: discovery_pb2.Resource) -> Authorization:
    message = authorization_pb2.Authorization()
    _unpack(resource, AUTHORIZATION_TYPE_URL, message)
    policy = authorization_from_proto(message)
    if policy.key != resource.name:
        raise DecodeError(f"it describes {policy.key!r}")
    return policy


def _decode_waypoint(resource: discovery_pb2.Resource) -> tuple[str, str]:
    message = extensions_pb2.WaypointResource()
    _unpack(resource, WAYPOINT_TYPE_URL, message)
    if not resource.name:
        raise DecodeError("a WaypointResource needs a name")
    if not message.manifest_json:
        raise DecodeError("the manifest is empty")
    return resource.name, message.manifest_json


def _decode_all(
    resources: Sequence[discovery_pb2.Resource], decode: Callable[[discovery_pb2.Resource], Any]
) -> list[Any]:
    decoded, errors = [], []
    for resource in resources:
        try:
            decoded.append(decode(resource))
        except (DecodeError, ValueError) as exc:
            errors.append(f"{resource.name or '<unnamed resource>'}: {exc}")
    if errors:
        raise _Rejected("; ".join(errors))
    return decoded


class XdsClient:
    """Keeps ``state`` in sync with the control plane at ``address`` (``host:port``).

    ``node`` is the node this ztunnel serves (sent as the node id and ``NODE_NAME``).
    ``credentials``: gRPC channel credentials (TLS), or None for plaintext.
    ``channel_options``: extra gRPC channel options, e.g. ``grpc.ssl_target_name_override``
    for the control plane's DNS SAN when dialling it by IP address.
    ``l7``: where waypoint configuration goes; with it the client also subscribes to
    ``WaypointResource`` (see the module docstring).
    ``call_metadata``: called before each stream opens, the gRPC metadata to send with
    it (e.g. ``authorization: Bearer <token>`` of a ztunnel in a cluster, fetched anew
    at every reconnect so a renewed token is used).
    ``synced`` is set once every subscribed type's first response is applied;
    ``connected`` is true while a stream is delivering.
    """

    def __init__(
        self,
        address: str,
        node: str,
        state: ProxyState,
        *,
        credentials: grpc.ChannelCredentials | None,
        backoff: tuple[float, float] = (0.5, 30.0),
        channel_options: Sequence[tuple[str, Any]] = (),
        l7: L7Sink | None = None,
        call_metadata: Callable[[], Awaitable[Sequence[tuple[str, str]]]] | None = None,
    ) -> None:
        first, longest = backoff
        if not 0 < first <= longest:
            raise ValueError(f"backoff {backoff!r}: need 0 < first delay <= longest delay")
        if not node:
            raise ValueError("an XdsClient needs a node name")
        self.address = address
        self.node = node
        self.state = state
        self.credentials = credentials
        self.channel_options = tuple(channel_options)  # extra gRPC channel options
        self.backoff = (float(first), float(longest))
        self.l7 = l7
        self.call_metadata = call_metadata
        # The waypoint type first: its first response arrives before the addresses'.
        self.type_urls = (WAYPOINT_TYPE_URL, *TYPE_URLS) if l7 is not None else TYPE_URLS
        self.synced = asyncio.Event()
        self.nacks = 0  # responses rejected, for tests and metrics
        self._versions: dict[str, dict[str, str]] = {t: {} for t in self.type_urls}
        self._received: set[str] = set()
        self._connected = False
        self._outage = False
        self._task: asyncio.Task[None] | None = None
        self._subscriptions: list[XdsSubscription] = []
        if not isinstance(state.policies, ByNamePolicyStore):
            store = ByNamePolicyStore(lambda: state.workloads, state.policies.root_namespace)
            for policy in state.policies.authorizations():
                store.put_authorization(policy)
            state.policies = store

    @property
    def connected(self) -> bool:
        """Whether a stream to the control plane is open and has delivered a response."""
        return self._connected

    @property
    def versions(self) -> dict[str, dict[str, str]]:
        """Applied resource versions by type and name (sent on reconnect)."""
        return {t: dict(v) for t, v in self._versions.items()}

    def start(self) -> None:
        """Connect in the background (and keep reconnecting until ``close``)."""
        if self._task is not None:
            raise RuntimeError("XdsClient is already started")
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop: close the stream and end every subscription; the state is kept."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._connected = False
        for subscription in list(self._subscriptions):
            subscription.close()

    async def __aenter__(self) -> XdsClient:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def subscribe(self, node: str | None = None) -> XdsSubscription:
        """``Delta``s of what this client applies; the first (once synced) is everything.

        Policies in them are attached by name: apply them to a state whose store is a
        ``ByNamePolicyStore``.
        """
        from ambient.xds.subscription import XdsSubscription  # the control plane's snapshot

        subscription = XdsSubscription(self, node if node is not None else self.node)
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: XdsSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    # -- the stream ----------------------------------------------------------------------

    async def _run(self) -> None:
        first, longest = self.backoff
        delay = first
        while True:
            try:
                await self._stream()
                reason = "the control plane ended the stream"
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()  # an AioRpcError
                reason = f"{getattr(code, 'name', code)}: {details}"
            except asyncio.InvalidStateError:  # writing the ACK after the call ended
                reason = "the control plane ended the stream"
            except TokenError as exc:  # nothing to authenticate with yet: retry
                reason = str(exc)
            except Exception as exc:  # a bug of ours: report it, keep trying
                log.exception("xDS client error (node %s)", self.node)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                delivered, self._connected = self._connected, False
            if delivered:
                delay = first
            if not self._outage:
                self._outage = True
                log.warning(
                    "control plane unreachable, %s (node %s, %s: %s; retrying with back-off "
                    "up to %gs)",
                    "keeping last config" if self.synced.is_set() else "no config yet",
                    self.node,
                    self.address,
                    reason,
                    longest,
                )
            else:
                log.debug("xDS stream to %s failed again: %s", self.address, reason)
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, longest)

    def _channel(self) -> Any:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *KEEPALIVE,
            *self.channel_options,
        ]
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, self.credentials, options=options)

    async def _stream(self) -> None:
        metadata = tuple(await self.call_metadata()) if self.call_metadata is not None else None
        channel = self._channel()
        try:
            call = channel.stream_stream(
                METHOD,
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
            )(metadata=metadata)
            for type_url in self.type_urls:
                await call.write(self._initial_request(type_url))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                if not self._connected:
                    self._connected = True
                    if self._outage:
                        self._outage = False
                        log.info(
                            "control plane %s reachable again (node %s)", self.address, self.node
                        )
                await call.write(self._handle(response))
        finally:
            await channel.close()

    def _initial_request(self, type_url: str) -> discovery_pb2.DeltaDiscoveryRequest:
        metadata = struct_pb2.Struct()
        metadata.update({"NODE_NAME": self.node})
        return discovery_pb2.DeltaDiscoveryRequest(
            node=core_pb2.Node(id=self.node, metadata=metadata, user_agent_name="ambient"),
            type_url=type_url,
            initial_resource_versions=self._versions[type_url],
        )

    def _handle(
        self, response: discovery_pb2.DeltaDiscoveryResponse
    ) -> discovery_pb2.DeltaDiscoveryRequest:
        type_url, nonce = response.type_url, response.nonce
        try:
            self._apply(response)
        except _Rejected as exc:
            self.nacks += 1
            log.warning(
                "rejected %s push (nonce %s) from the control plane, nothing of it applied (NACK): %s",
                _short(type_url),
                nonce,
                exc,
            )
            return discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url,
                response_nonce=nonce,
                error_detail=discovery_pb2.Status(code=_INVALID_ARGUMENT, message=str(exc)),
            )
        return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce)

    def _apply(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        type_url = response.type_url
        removed = [
            *response.removed_resources,
            *(r.name for r in response.removed_resource_names),
        ]
        if type_url == ADDRESS_TYPE_URL:
            addresses = _decode_all(response.resources, _decode_address)
            self._apply_to_state(addresses, removed, (), ())
        elif type_url == AUTHORIZATION_TYPE_URL:
            policies = _decode_all(response.resources, _decode_authorization)
            self._apply_to_state((), (), policies, [("AuthorizationPolicy", n) for n in removed])
        elif type_url == WAYPOINT_TYPE_URL and self.l7 is not None:
            manifests = dict(_decode_all(response.resources, _decode_waypoint))
            try:
                self.l7.apply(manifests, removed)
            except ValueError as exc:
                raise _Rejected(str(exc)) from None
        else:
            raise _Rejected(f"type {type_url!r} was not subscribed to")
        versions = self._versions[type_url]
        for name in removed:
            versions.pop(name, None)
        for resource in response.resources:
            versions[resource.name] = resource.version
        log.debug(
            "applied %s nonce %s: %d upserted, %d removed",
            _short(type_url),
            response.nonce,
            len(response.resources),
            len(removed),
        )
        self._received.add(type_url)
        if not self.synced.is_set() and self._received.issuperset(self.type_urls):
            log.info("node %s synced with the control plane at %s", self.node, self.address)
            self.synced.set()
        for subscription in self._subscriptions:
            subscription.notify()

    def _apply_to_state(
        self,
        addresses: Sequence[Workload | Service],
        removed: Sequence[str],
        policies: Sequence[Authorization],
        policies_removed: Sequence[tuple[str, str]],
    ) -> None:
        try:
            self.state.apply(addresses, removed, policies, policies_removed)
        except Exception as exc:  # a bug of ours, not of the push: say so to the server too
            log.exception("applying a push to the proxy state failed")
            raise _Rejected(f"applying failed: {type(exc).__name__}: {exc}") from exc
