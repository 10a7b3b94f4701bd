"""What a node's waypoints enforce: the L7 objects, and the live parts built from them.

``L7Config`` holds the objects a waypoint needs (HTTPRoute, VirtualService,
DestinationRule, RequestAuthentication, AuthorizationPolicy with ``targetRefs``).
It is fed either straight from the control plane's ``ConfigSet`` (one-process
``ambient up``) or from xDS, where each object travels as its manifest
(``WaypointResource``) and is validated again here with the same loader.

The parts the proxy calls (``Router``, ``RequestAuthorizer``,
``RequestAuthenticator``) are rebuilt lazily, once per change of the L7 objects
or of the pushed services, and swapped in whole: a request sees one version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ambient.api.workload import Workload, waypoint_of
from ambient.authz._spec import PolicyError
from ambient.config import ConfigError, ConfigSet, load_text
from ambient.config.configset import Ref
from ambient.hbone.protocol import HboneSettings
from ambient.identity.manager import CertificateManager
from ambient.waypoint.model import (
    AuthnResult,
    AuthzVerdict,
    Downstream,
    RequestHead,
    RequestPrincipal,
    RouteDecision,
    Router,
    Target,
)
from ambient.waypoint.policy import (
    JwksCache,
    JwtAuthenticator,
    L7Policy,
    RequestAuthentication,
    WaypointAuthorizer,
    WaypointRef,
    compile_authorization_policy,
)
from ambient.waypoint.proxy.server import Waypoint
from ambient.waypoint.routing import build_router
from ambient.ztunnel.state import ProxyState

if TYPE_CHECKING:
    from ambient.nodeagent.netns import NetnsThread

__all__ = [
    "L7_KINDS",
    "L7Config",
    "LiveAuthenticator",
    "LiveAuthorizer",
    "LiveRouter",
    "is_l7_object",
    "resource_name",
    "waypoint_factory",
    "waypoint_manifests",
]

log = logging.getLogger(__name__)

L7_KINDS = frozenset(
    {
        "HTTPRoute",
        "VirtualService",
        "DestinationRule",
        "RequestAuthentication",
        "AuthorizationPolicy",
    }
)


def is_l7_object(obj: Any) -> bool:
    """Whether a waypoint needs ``obj``: an L7 kind (AuthorizationPolicy only with targetRefs)."""
    if obj.kind not in L7_KINDS:
        return False
    if obj.kind == "AuthorizationPolicy":
        spec = getattr(obj, "spec", None)
        refs = (
            spec.get("targetRefs") or spec.get("targetRef") if isinstance(spec, Mapping) else None
        )
        return bool(refs)
    return True


def resource_name(ref: Ref) -> str:
    """The xDS name of an L7 object: ``Kind/namespace/name``."""
    return f"{ref.kind}/{ref.namespace}/{ref.name}"


def waypoint_manifests(config: ConfigSet) -> dict[str, str]:
    """The L7 objects of ``config`` as (xDS name -> manifest JSON), from what was loaded."""
    out: dict[str, str] = {}
    for ref, obj in config.objects.items():
        if not is_l7_object(obj):
            continue
        origin = config.origins.get(ref)
        if origin is None or origin.source is None:
            continue
        out[resource_name(ref)] = json.dumps(origin.source, sort_keys=True, default=str)
    return out


class L7Config:
    """The L7 objects of the mesh as this node's waypoints see them."""

    def __init__(self) -> None:
        self.config = ConfigSet()
        self.version = 0
        self._manifests: dict[str, str] = {}

    def set_config(self, config: ConfigSet) -> None:
        """Replace everything with the L7 objects of ``config`` (one-process mode)."""
        objects = {ref: obj for ref, obj in config.objects.items() if is_l7_object(obj)}
        if objects == dict(self.config.objects):
            return
        origins = {ref: config.origins[ref] for ref in objects if ref in config.origins}
        self.config = ConfigSet(objects, origins)
        self.version += 1

    def apply(self, upserted: Mapping[str, str], removed: Iterable[str]) -> None:
        """Apply an xDS delta of manifests; raises ``ValueError`` (NACK) if one is invalid.

        Nothing is applied unless everything is valid.
        """
        manifests = dict(self._manifests)
        for name in removed:
            manifests.pop(name, None)
        manifests.update(upserted)
        text = "\n---\n".join(manifests[name] for name in sorted(manifests))
        try:
            config = load_text(text, "<xds>", check_refs=False) if text else ConfigSet()
        except ConfigError as exc:
            raise ValueError(f"invalid waypoint resource: {exc}") from exc
        self._manifests = manifests
        self.config = config
        self.version += 1


class LiveRouter:
    """A ``Router`` over the current route table, rebuilt when the config or services change."""

    def __init__(
        self,
        l7: L7Config,
        state: ProxyState,
        build: Callable[[ConfigSet, ProxyState], Router] | None = None,
    ) -> None:
        self.l7 = l7
        self.state = state
        self._build = build or (lambda config, s: build_router(config, list(s.services.values())))
        self._key: tuple[int, int] | None = None
        self._router: Router | None = None

    def current(self) -> Router:
        key = (self.l7.version, self.state.version)
        if self._router is None or key != self._key:
            self._router = self._build(self.l7.config, self.state)
            self._key = key
        return self._router

    def route(self, target: Target, request: RequestHead) -> RouteDecision:
        return self.current().route(target, request)


def _l7_policies(config: ConfigSet) -> list[L7Policy]:
    """Compiled L7 AuthorizationPolicies of ``config`` (validated at load already)."""
    policies: list[L7Policy] = []
    for obj in config.by_kind("AuthorizationPolicy"):
        spec = getattr(obj, "spec", None)
        if not isinstance(spec, Mapping):
            continue
        try:
            compiled = compile_authorization_policy(
                obj.meta.name, obj.meta.namespace, spec, obj.meta.annotations
            )
        except PolicyError as exc:  # cannot happen for a loaded config; fail closed anyway
            log.error("AuthorizationPolicy %s/%s: %s", obj.meta.namespace, obj.meta.name, exc)
            compiled = None
        if compiled is not None and compiled.policy is not None:
            policies.append(compiled.policy)
    return policies


class LiveAuthorizer:
    """A ``RequestAuthorizer`` over the current L7 policies of one waypoint."""

    def __init__(self, l7: L7Config, waypoint: WaypointRef) -> None:
        self.l7 = l7
        self.waypoint = waypoint
        self._version = -1
        self._current = WaypointAuthorizer((), waypoint)

    def current(self) -> WaypointAuthorizer:
        if self._version != self.l7.version:
            self._current = WaypointAuthorizer(_l7_policies(self.l7.config), self.waypoint)
            self._version = self.l7.version
        return self._current

    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        return self.current().check_connection(target, downstream)

    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:
        return self.current().check(target, downstream, request, principal)


class LiveAuthenticator:
    """A ``RequestAuthenticator`` over the current RequestAuthentications of one waypoint.

    The JWKS cache outlives config changes: keys fetched stay cached.
    """

    def __init__(self, l7: L7Config, waypoint: WaypointRef) -> None:
        self.l7 = l7
        self.waypoint = waypoint
        self.jwks = JwksCache()
        self._version = -1
        self._current = JwtAuthenticator((), waypoint, jwks=self.jwks)

    def current(self) -> JwtAuthenticator:
        if self._version != self.l7.version:
            policies = [
                o
                for o in self.l7.config.by_kind("RequestAuthentication")
                if isinstance(o, RequestAuthentication)
            ]
            self._current = JwtAuthenticator(policies, self.waypoint, jwks=self.jwks)
            self._version = self.l7.version
        return self._current

    async def authenticate(self, target: Target, request: RequestHead) -> AuthnResult:
        return await self.current().authenticate(target, request)

    async def aclose(self) -> None:
        await self.jwks.aclose()


class _HostedWaypoint:
    """A ``Waypoint`` plus the live parts it owns (closed with it)."""

    def __init__(self, waypoint: Waypoint, authenticator: LiveAuthenticator) -> None:
        self.waypoint = waypoint
        self.authenticator = authenticator

    async def start(self) -> None:
        await self.waypoint.start()

    async def close(self) -> None:
        await self.waypoint.close()
        await self.authenticator.aclose()

    @property
    def ready(self) -> bool:
        return self.waypoint.ready


class WaypointMaker(Protocol):
    """Makes the waypoint of a waypoint pod (with ``netns``: inside the pod's namespace)."""

    def __call__(self, workload: Workload, netns: NetnsThread | None = None) -> _HostedWaypoint: ...


def waypoint_factory(
    state: ProxyState,
    certificates: CertificateManager,
    l7: L7Config,
    settings: HboneSettings | None = None,
) -> WaypointMaker:
    """What a node proxy calls to run the waypoint of one of its waypoint pods."""

    def make(workload: Workload, netns: NetnsThread | None = None) -> _HostedWaypoint:
        name = waypoint_of(workload) or workload.name
        ref = WaypointRef(workload.namespace, name)
        authenticator = LiveAuthenticator(l7, ref)
        waypoint = Waypoint(
            name,
            workload.namespace,
            workload.addresses,
            state,
            certificates,
            service_account=workload.service_account,
            trust_domain=workload.trust_domain,
            authenticator=authenticator,
            authorizer=LiveAuthorizer(l7, ref),
            router=LiveRouter(l7, state),
            settings=settings,
            netns=netns,
        )
        return _HostedWaypoint(waypoint, authenticator)

    return make
