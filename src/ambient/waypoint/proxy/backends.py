"""What routing needs of one backend, kept until the mesh state changes.

For every request to a service the forwarder needs the backend's ``Service``, its
Envoy cluster name, its usable endpoints (``balancer.endpoints_of``: a walk over the
service's workloads and ports) and the protocol its port declares. These depend only
on the backend (service, port, subset and the subset's labels) and on the
``ProxyState``, so :class:`BackendViews` computes them once per backend and keeps
them while ``state.version`` stays the same: every push bumps the version and the
whole memo is dropped at the next request, so no request is routed on endpoints
older than the state it runs against (exact invalidation; a DestinationRule change
that gives a subset other labels is another key). Bounded: cleared when full.
"""

from __future__ import annotations

from dataclasses import dataclass

from ambient.state.proxy import ProxyState
from ambient.state.workload import AppProtocol, Service
from ambient.waypoint.model import Backend
from ambient.waypoint.proxy.balancer import Endpoint, endpoints_of

__all__ = ["BackendView", "BackendViews", "declared_protocol"]

MEMO_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend under one ProxyState version."""

    service: Service | None
    cluster: str  # Envoy's upstream cluster name: outbound|port|subset|host
    endpoints: tuple[Endpoint, ...]
    declared: AppProtocol  # what its service port declares (``declared_protocol``)


def declared_protocol(state: ProxyState, backend: Backend) -> AppProtocol:
    """What the backend's service port declares (UNKNOWN for a workload or no service)."""
    service = state.services.get(backend.service_key)
    if service is not None:
        for port in service.ports:
            if port.service_port == backend.port:
                return port.app_protocol
    return AppProtocol.UNKNOWN


class BackendViews:
    """:class:`BackendView` per backend, for the current ProxyState version."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self._views: dict[tuple[object, ...], BackendView] = {}
        self._version = -1  # the state version ``_views`` was built from

    def get(self, backend: Backend) -> BackendView:
        state = self.state
        if self._version != state.version:
            self._views.clear()
            self._version = state.version
        key = (backend.namespace, backend.hostname, backend.port, backend.subset,
               backend.subset_labels)  # fmt: skip
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= MEMO_LIMIT:
                self._views.clear()
            view = self._views[key] = BackendView(
                state.services.get(backend.service_key),
                f"outbound|{backend.port}|{backend.subset or ''}|{backend.hostname}",
                tuple(endpoints_of(state, backend)),
                declared_protocol(state, backend),
            )
        return view
