"""What a node's waypoints enforce: the L7 objects, and the live parts built from them.

``L7Config`` holds the objects a waypoint needs (HTTPRoute, VirtualService,
DestinationRule, RequestAuthentication, AuthorizationPolicy with ``targetRefs``).
It is fed either straight from the control plane's ``ConfigSet`` (one-process
``ambient up``: ``set_config``) or from xDS (``apply``), where each object travels
as its manifest (``WaypointResource``, see ``ambient.config.l7objects``) and is
validated again here with the same loader.

Until it has been fed once (``synced``), every request and connection a waypoint
receives is denied (fail closed: a waypoint never forwards traffic it has not
been told how to police). The node proxy process does not open its listeners
before its first xDS sync, which includes this type, so in practice this only
guards against a misordered caller.

The parts the proxy calls (``Router``, ``RequestAuthorizer``,
``RequestAuthenticator``) are rebuilt lazily, once per change of the L7 objects
or of the pushed services, and swapped in whole: a request sees one version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ambient.authz._spec import PolicyError
from ambient.config import ConfigSet
from ambient.config.l7objects import (
    L7_KINDS,
    is_l7_object,
    resource_name,
    waypoint_manifests,
)
from ambient.config.requestauthn import RequestAuthentication
from ambient.config.telemetry import EffectiveTelemetry, Telemetry, effective_telemetry
from ambient.hbone.messages import HBONE_PORT
from ambient.hbone.protocol import HboneSettings
from ambient.identity.manager import CertificateManager
from ambient.state.proxy import ProxyState
from ambient.state.workload import Workload, waypoint_of
from ambient.waypoint.l7config import NOT_CONFIGURED, L7Config
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
    WaypointAuthorizer,
    WaypointRef,
    compile_authorization_policy,
)
from ambient.waypoint.proxy.server import Waypoint
from ambient.waypoint.routing import build_router
from ambient.waypoint.tracing.live import LiveTracing
from ambient.waypoint.tracing.tracer import ProxyInfo

if TYPE_CHECKING:
    from ambient.netns import NetnsThread
    from ambient.waypoint.workers import WaypointWorkers

__all__ = [
    "L7_KINDS",
    "NOT_CONFIGURED",
    "L7Config",
    "LiveAuthenticator",
    "LiveAuthorizer",
    "LiveRouter",
    "hosted_waypoint",
    "is_l7_object",
    "resource_name",
    "waypoint_factory",
    "waypoint_manifests",
]

log = logging.getLogger(__name__)


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
        if not self.l7.synced:
            return AuthzVerdict(False, None, NOT_CONFIGURED)
        return self.current().check_connection(target, downstream)

    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:
        if not self.l7.synced:
            return AuthzVerdict(False, None, NOT_CONFIGURED)
        return self.current().check(target, downstream, request, principal)


class LiveTelemetry:
    """The Telemetry settings (access logging, metrics) of one waypoint, as the L7 config
    says now: rebuilt when it changes (``config.telemetry.effective_telemetry``)."""

    def __init__(self, l7: L7Config, waypoint: WaypointRef, labels: Mapping[str, str]) -> None:
        self.l7 = l7
        self.waypoint = waypoint
        self.labels = dict(labels)
        self._version = -1
        self._current = EffectiveTelemetry()

    def __call__(self) -> EffectiveTelemetry:
        if self._version != self.l7.version:
            self._current = effective_telemetry(
                (t for t in self.l7.config.by_kind("Telemetry") if isinstance(t, Telemetry)),
                self.waypoint.namespace,
                self.waypoint.name,
                self.labels,
            )
            self._version = self.l7.version
        return self._current


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

    def __init__(
        self,
        waypoint: Waypoint,
        authenticator: LiveAuthenticator,
        l7: L7Config,
        workload: Workload | None = None,
    ) -> None:
        self.waypoint = waypoint
        self.authenticator = authenticator
        self.l7 = l7
        self.workload = workload
        self.workers = 1  # processes sharing the HBONE listener (``waypoint.workers``)
        self._pool: WaypointWorkers | None = None

    def describe(self) -> dict[str, Any]:
        """Its L7 configuration as ``/config_dump`` shows it."""
        return {
            "l7": {
                "synced": self.l7.synced,
                "version": self.l7.version,
                "resources": [
                    f"{ref.kind}/{ref.namespace}/{ref.name}"
                    for ref in sorted(self.l7.config.objects, key=str)
                ],
            },
            "tracing": self._tracing(),
            "workers": self._workers(),
        }

    def _workers(self) -> dict[str, Any]:
        """Its processes: this one, then the worker children still running."""
        pool = self._pool
        children = [w.process.pid for w in pool.workers if w.alive] if pool is not None else []
        return {"configured": self.workers, "pids": [os.getpid(), *children]}

    def _tracing(self) -> dict[str, Any] | None:
        """The tracer in force and its exporter's counts (None: no spans)."""
        tracing = self.waypoint.tracing
        if not isinstance(tracing, LiveTracing):
            return None
        tracer, exporter = tracing(), tracing.exporter
        if tracer is None or exporter is None:
            return None
        target = exporter.target
        return {
            "sampling": tracer.sampling,
            "collector": f"{target.protocol}://{target.authority}",
            "exported": exporter.exported,
            "dropped": exporter.dropped,
            "failed": exporter.failed,
        }

    def proxy_config(self) -> dict[str, Any]:
        """What it compiled (``ambient proxy-config``): listeners, routes, clusters."""
        from ambient.waypoint.debugdump import proxy_config

        return proxy_config(self.waypoint, self.l7.config)

    async def start(self) -> None:
        await self.waypoint.start()
        if self.workers > 1 and self.workload is not None:
            from ambient.waypoint.workers import WaypointWorkers

            self._pool = WaypointWorkers(self.workers - 1, self.workload, self.waypoint, self.l7)
            try:
                await self._pool.start()
            except BaseException:
                await self.close()
                raise
            self.waypoint.worker_metrics = self._pool.scrape

    async def close(self) -> None:
        if self._pool is not None:  # the workers first: they stop taking connections
            self.waypoint.worker_metrics = None
            await self._pool.close()
            self._pool = None
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
    *,
    workers: int = 1,
) -> WaypointMaker:
    """What a node proxy calls to run the waypoint of one of its waypoint pods.

    ``workers`` > 1: each waypoint runs that many processes sharing its HBONE listener
    (``ambient.waypoint.workers``); a waypoint in a pod's network namespace runs one.
    """
    if workers < 1:
        raise ValueError(f"waypoint workers must be at least 1, got {workers}")

    def make(workload: Workload, netns: NetnsThread | None = None) -> _HostedWaypoint:
        count = workers if netns is None else 1
        hosted = hosted_waypoint(
            state, certificates, l7, workload, settings, netns=netns, reuse_port=count > 1
        )
        hosted.workers = count
        return hosted

    return make


def hosted_waypoint(
    state: ProxyState,
    certificates: CertificateManager,
    l7: L7Config,
    workload: Workload,
    settings: HboneSettings | None = None,
    *,
    netns: NetnsThread | None = None,
    reuse_port: bool = False,
    admin: bool = True,
    hbone_port: int = HBONE_PORT,
) -> _HostedWaypoint:
    """The waypoint of the waypoint pod ``workload``, over ``l7`` and ``state``."""
    name = waypoint_of(workload) or workload.name
    ref = WaypointRef(workload.namespace, name)
    authenticator = LiveAuthenticator(l7, ref)
    telemetry = LiveTelemetry(l7, ref, workload.labels)
    address = str(workload.addresses[0]) if workload.addresses else "-"
    proxy = ProxyInfo(
        node_id=f"waypoint~{address}~{workload.name}.{workload.namespace}~"
        f"{workload.namespace}.svc.{workload.trust_domain}",
        service_name=f"{name}.{workload.namespace}",
        namespace=workload.namespace,
        canonical_service=workload.canonical_name or name,
    )
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
        hbone_port=hbone_port,
        netns=netns,
        telemetry=telemetry,
        tracing=LiveTracing(l7, telemetry, state, proxy),
        reuse_port=reuse_port,
        admin=admin,
    )
    return _HostedWaypoint(waypoint, authenticator, l7, workload)
