"""The contract between the waypoint's parts: the request as routing and policy see it, and their answers.

The proxy (``waypoint.proxy``) parses HTTP/1.1 or HTTP/2 into a ``RequestHead``,
then asks, in Envoy's filter order:

1. a ``RequestAuthenticator`` (RequestAuthentication / JWT) -> ``AuthnResult``;
   a present but invalid token ends the request with 401;
2. a ``RequestAuthorizer`` (L7 AuthorizationPolicy) -> ``AuthzVerdict``;
   a denial ends it with 403 ``RBAC: access denied``;
3. a ``Router`` (HTTPRoute / VirtualService / DestinationRule) -> ``RouteDecision``:
   forward to a backend, or answer directly (redirect, 404).

These types are plain frozen data so each part can be tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl

from ambient.config.consistenthash import ConsistentHash
from ambient.config.destinationrule import (
    DEFAULT_POOL,
    LoadBalancer,
    OutlierPolicy,
    PoolPolicy,
)
from ambient.frozen import FrozenMap
from ambient.identity.spiffe import SpiffeId
from ambient.state.workload import IPAddress
from ambient.waypoint.resilience.fault import FaultPolicy
from ambient.waypoint.resilience.retry import DEFAULT_RETRY, RetryPolicy

__all__ = [
    "AuthnResult",
    "AuthzVerdict",
    "Backend",
    "DirectResponse",
    "Downstream",
    "HeaderOps",
    "Mirror",
    "RequestAuthenticator",
    "RequestAuthorizer",
    "RequestHead",
    "RequestPrincipal",
    "RouteDecision",
    "Router",
    "Target",
]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """An HTTP request's head, the same for HTTP/1.1 and HTTP/2.

    ``headers`` keeps every field in order with lower-case names, pseudo-headers
    excluded; ``authority`` is ``:authority`` or ``Host``; ``path`` is the
    request target as received (path and optional ``?query``); ``version`` the
    downstream's HTTP version (``HTTP/1.1`` or ``HTTP/2``); ``upgrade`` the
    protocol an upgrade asks for (HTTP/1.1 ``Upgrade``, or HTTP/2 extended
    CONNECT's ``:protocol``, seen as a ``GET`` as Envoy's filters see it).
    """

    method: str
    authority: str
    path: str
    headers: Headers = ()
    scheme: str = "http"
    version: str = "HTTP/1.1"
    upgrade: str | None = None

    def header(self, name: str) -> str | None:
        """All values of ``name`` joined with ``,`` (RFC 9110 5.3), or None when absent."""
        name = name.lower()
        found: str | None = None
        for key, value in self.headers:  # one call, no list: asked several times a request
            if key == name:
                found = value if found is None else f"{found},{value}"
        return found

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def path_only(self) -> str:
        """The path without the query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        """The query string without ``?`` ('' when there is none)."""
        parts = self.path.split("?", 1)
        return parts[1] if len(parts) == 2 else ""

    def query_params(self) -> list[tuple[str, str]]:
        """Decoded query parameters in order (repeated names kept)."""
        return parse_qsl(self.query, keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class Target:
    """What the client addressed, from the HBONE CONNECT ``:authority`` the waypoint received.

    A service (``hostname`` set: its FQDN, e.g. ``orders.shop.svc.cluster.local``)
    or a single workload (``hostname`` None), with the port the client dialled.
    """

    namespace: str
    hostname: str | None
    address: IPAddress
    port: int

    @property
    def service_key(self) -> str | None:
        """``namespace/hostname`` (the workload API's service key), or None for a workload."""
        return f"{self.namespace}/{self.hostname}" if self.hostname else None


@dataclass(frozen=True, slots=True)
class Downstream:
    """Who is calling, as verified by HBONE mTLS (the client's own identity, not ztunnel's)."""

    peer_identity: SpiffeId | None
    source_ip: IPAddress
    source_port: int = 0
    # ``str(peer_identity)``, formatted once per tunnel (every request's record uses it)
    principal: str | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        identity = self.peer_identity
        object.__setattr__(self, "principal", str(identity) if identity else None)


@dataclass(frozen=True, slots=True)
class RequestPrincipal:
    """A verified JWT: ``principal`` is ``<iss>/<sub>``; ``claims`` the decoded payload."""

    principal: str
    issuer: str
    subject: str
    claims: FrozenMap[str, object] = field(default_factory=FrozenMap)
    audiences: tuple[str, ...] = ()
    presenter: str = ""  # azp claim


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Header changes in Gateway API order: set (replace), add (append), remove."""

    set: Headers = ()
    add: Headers = ()
    remove: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.set or self.add or self.remove)

    def apply(self, headers: Headers) -> Headers:
        """Return ``headers`` with the changes applied (names compared case-insensitively)."""
        if not (self.set or self.add or self.remove):
            return headers
        set_names = {k.lower() for k, _ in self.set}
        removed = {k.lower() for k in self.remove}
        out = [(k, v) for k, v in headers if k not in set_names and k not in removed]
        out.extend((k.lower(), v) for k, v in self.set if k.lower() not in removed)
        out.extend((k.lower(), v) for k, v in self.add if k.lower() not in removed)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class AuthnResult:
    """The outcome of RequestAuthentication for one request.

    ``failure`` set: a token was present but invalid (the proxy answers 401 with
    it as the body's reason). Otherwise ``principal`` is the verified token's
    principal, or None when no token was sent (the request goes on unauthenticated),
    and ``headers`` is the request's header list after ``forwardOriginalToken``,
    ``outputPayloadToHeader`` and ``outputClaimToHeaders``.
    """

    principal: RequestPrincipal | None = None
    failure: str | None = None
    headers: Headers | None = None  # None: unchanged


@dataclass(frozen=True, slots=True)
class AuthzVerdict:
    """Allowed or not, and which policy decided (``ns/name``), for the access log."""

    allowed: bool
    policy: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Backend:
    """A chosen upstream: a service port, optionally narrowed to a DestinationRule subset."""

    namespace: str
    hostname: str  # service FQDN
    port: int
    subset: str | None = None
    subset_labels: FrozenMap[str, str] = field(default_factory=FrozenMap)
    load_balancer: LoadBalancer = LoadBalancer.ROUND_ROBIN
    pool: PoolPolicy = DEFAULT_POOL  # DestinationRule connectionPool (circuit breakers)
    outlier: OutlierPolicy | None = None  # DestinationRule outlierDetection
    consistent_hash: ConsistentHash | None = None  # loadBalancer.consistentHash (else simple)

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.hostname}"

    @property
    def cluster(self) -> tuple[str, int, str | None]:
        """Envoy's cluster: the unit of circuit breaking and outlier detection."""
        return (self.service_key, self.port, self.subset)

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether an endpoint with ``labels`` belongs to this backend's subset."""
        return all(labels.get(k) == v for k, v in self.subset_labels.items())


@dataclass(frozen=True, slots=True)
class Mirror:
    """Send a copy of the request to ``backend`` (fire and forget), for ``percent`` of requests."""

    backend: Backend
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """Answer without forwarding (redirects, 404 for unmatched routes, 500 for bad backends)."""

    status: int
    headers: Headers = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """What to do with one request. Exactly one of ``backend`` / ``response`` is set.

    ``path`` / ``authority``: the request's new target and host after URL
    rewrites (None: unchanged). ``route`` names the HTTPRoute/VirtualService that
    matched (``ns/name``), or ``default`` when none is attached.
    """

    route: str
    backend: Backend | None = None
    response: DirectResponse | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    path: str | None = None
    authority: str | None = None
    mirrors: tuple[Mirror, ...] = ()
    timeout: float | None = None  # seconds for the whole request, every attempt included
    retry: RetryPolicy | None = DEFAULT_RETRY  # None: no retries (Istio's default otherwise)
    fault: FaultPolicy | None = None


class RequestAuthenticator(Protocol):
    async def authenticate(self, target: Target, request: RequestHead) -> AuthnResult: ...


class RequestAuthorizer(Protocol):
    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        """L4-only decision for non-HTTP traffic passed through the waypoint as TCP."""
        ...

    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict: ...


class Router(Protocol):
    def route(self, target: Target, request: RequestHead) -> RouteDecision: ...
