"""The tracing settings a waypoint applies now, from its Telemetry and the mesh config.

``LiveTracing()`` returns the current ``Tracer`` (None: no spans), rebuilt when the
L7 objects (Telemetry, the ``istio`` ConfigMap) or the service state change:

- the provider is the merged Telemetry's (``config.telemetry.TracingSpec``), else the
  mesh config's ``defaultProviders.tracing``; no provider, a name the mesh config
  does not define as ``opentelemetry``, or ``disableSpanReporting``: no tracing (as
  istiod, which then configures none);
- the sampling is the Telemetry's ``randomSamplingPercentage``, else the mesh
  config's ``defaultConfig.tracing.sampling`` (default 1 %); with no Telemetry
  tracing at all, ``enableTracing: false`` turns the default provider off;
- the provider's ``service`` is looked up among the mesh's Services (``host`` or
  ``namespace/host``): the exporter connects to a ready endpoint of it (plaintext,
  as to a workload outside the mesh, the port mapped to the endpoint's); a host
  that is no mesh Service is used as it is (a DNS name or an IP address).

One exporter is kept per endpoint and reused across changes that do not move it
(its queue survives a Telemetry edit); a replaced one is flushed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ambient.config.meshconfig import MeshConfig, OpenTelemetryProvider, is_mesh_config
from ambient.config.telemetry import EffectiveTelemetry
from ambient.waypoint.tracing.otlp import ExportTarget, SpanExporter
from ambient.waypoint.tracing.tracer import ProxyInfo, Tracer

if TYPE_CHECKING:
    from collections.abc import Callable

    from ambient.state.proxy import ProxyState
    from ambient.waypoint.config import L7Config

__all__ = ["LiveTracing", "mesh_config"]

log = logging.getLogger("ambient.waypoint.tracing")


def mesh_config(l7: L7Config) -> MeshConfig:
    """The mesh config among the L7 objects (defaults when there is none)."""
    for obj in l7.config.by_kind("ConfigMap"):
        if is_mesh_config(obj):
            mesh = getattr(obj, "mesh", None)
            if isinstance(mesh, MeshConfig):
                return mesh
    return MeshConfig()


def _resolve(provider: OpenTelemetryProvider, state: ProxyState) -> tuple[str, int] | None:
    """Where to connect for ``provider``: a ready endpoint of its Service, or the host as is."""
    name = provider.service
    key = name if "/" in name else None
    host = name.split("/", 1)[1] if key else name
    service = state.services.get(key) if key else None
    if service is None:
        service = next((s for s in state.services.values() if s.hostname == host), None)
    if service is None:
        return host, provider.port
    from ambient.state.workload import WorkloadStatus

    for workload in state.endpoints(service):
        if workload.status is WorkloadStatus.HEALTHY and workload.addresses:
            port = state.workload_port(service, workload, provider.port)
            if port is not None:
                return str(workload.addresses[0]), port
    return None


class LiveTracing:
    """The ``Tracer`` of one waypoint as its configuration says now."""

    def __init__(
        self,
        l7: L7Config,
        telemetry: Callable[[], EffectiveTelemetry],
        state: ProxyState,
        proxy: ProxyInfo,
    ) -> None:
        self.l7 = l7
        self.telemetry = telemetry
        self.state = state
        self.proxy = proxy
        self._key: tuple[int, int] | None = None
        self._tracer: Tracer | None = None
        self.exporter: SpanExporter | None = None
        self._warned: set[str] = set()

    def __call__(self) -> Tracer | None:
        key = (self.l7.version, self.state.version)
        if key != self._key:
            self._key = key
            self._tracer = self._build()
        return self._tracer

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("waypoint %s: %s", self.proxy.service_name, message)

    def _build(self) -> Tracer | None:
        spec = self.telemetry().tracing
        mesh = mesh_config(self.l7)
        name = spec.provider if spec is not None else None
        if name is None:
            if spec is None and not mesh.enable_tracing:
                self._stop_exporter()
                return None
            name = mesh.default_tracing[0] if mesh.default_tracing else None
        if name is None or (spec is not None and spec.disabled):
            self._stop_exporter()
            return None
        provider = mesh.provider(name)
        if provider is None:
            self._warn_once(
                f"tracing provider {name!r} is not an opentelemetry extensionProvider of the "
                "mesh config (ConfigMap istio-system/istio): no spans"
            )
            self._stop_exporter()
            return None
        address = _resolve(provider, self.state)
        if address is None:
            self._warn_once(
                f"tracing provider {name!r}: service {provider.service} has no ready endpoint"
            )
            self._stop_exporter()
            return None
        target = ExportTarget(
            address[0], address[1], provider.protocol, provider.http_path or "/v1/traces",
            provider.timeout, provider.headers,
        )  # fmt: skip
        exporter = self.exporter
        if exporter is None or exporter.target != target:
            self._stop_exporter()
            exporter = self.exporter = SpanExporter(
                target, (("service.name", self.proxy.service_name),)
            )
        sampling = (
            spec.sampling if spec is not None and spec.sampling is not None else mesh.sampling
        )
        return Tracer(
            self.proxy,
            exporter.submit,
            sampling,
            use_request_id=spec.use_request_id if spec is not None else True,
            istio_tags=spec.istio_tags if spec is not None else True,
            max_tag_length=provider.max_tag_length,
        )

    def _stop_exporter(self) -> None:
        """Close the current exporter (flushing it) in the background; always None."""
        old, self.exporter = self.exporter, None
        if old is not None:
            with contextlib.suppress(RuntimeError):  # no loop: nothing was ever sent
                asyncio.get_running_loop().create_task(old.aclose())

    async def aclose(self) -> None:
        old, self.exporter = self.exporter, None
        if old is not None:
            await old.aclose()
