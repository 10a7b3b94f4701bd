"""The control plane's monitoring port, istiod's 15014: ``/metrics`` and Prometheus discovery.

- ``GET /metrics``: the control plane's metrics (``monitoring.metrics``);
- ``GET /prometheus/sd``: the mesh's scrape targets in Prometheus's ``http_sd_configs``
  format (``monitoring.discovery``), from the index as it is at the request.

Plain HTTP, as istiod's 15014: it serves counts and the addresses of the mesh's proxies,
which anyone on the host can list from the proxies' own ports anyway; no configuration,
no keys.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ambient.httpd import AdminServer, Request, Response
from ambient.monitoring.discovery import SYSTEM_NAMESPACE, scrape_targets
from ambient.monitoring.metrics import ControlPlaneMetrics

if TYPE_CHECKING:
    from ambient.controlplane.plane import ControlPlane

__all__ = [
    "MONITORING_PORT",
    "SD_PATH",
    "MonitoringServer",
    "monitoring_address_beside",
    "observe_nodes",
    "serve_monitoring",
]

log = logging.getLogger("ambient.monitoring")

MONITORING_PORT = 15014
SD_PATH = "/prometheus/sd"


class MonitoringServer:
    """Serves ``metrics`` and the discovery of ``plane``'s mesh (see the module docstring)."""

    def __init__(
        self,
        plane: ControlPlane,
        metrics: ControlPlaneMetrics,
        *,
        system_namespace: str = SYSTEM_NAMESPACE,
        cluster: bool = False,
    ) -> None:
        self.plane = plane
        self.metrics = metrics
        self.system_namespace = system_namespace
        self.cluster = cluster  # ztunnels are pods with their own IPs (monitoring.discovery)
        self.address = ""  # host:port once started
        self._server = AdminServer(
            {"/metrics": self._metrics, "/stats/prometheus": self._metrics, SD_PATH: self._sd}
        )

    async def start(self, listen: str) -> str:
        """Listen on ``listen`` (``host:port``; port 0 picks one); returns ``host:port``."""
        host, _, port = listen.rpartition(":")
        try:
            bound_host, bound_port = await self._server.start(host or "127.0.0.1", int(port))
        except ValueError:
            raise OSError(f"monitoring address {listen!r} is not host:port") from None
        self.address = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        )
        log.info("monitoring on %s (/metrics, %s)", self.address, SD_PATH)
        return self.address

    async def close(self) -> None:
        await self._server.close()

    def _metrics(self, _request: Request) -> Response:
        return self.metrics.render()

    def _sd(self, _request: Request) -> Response:
        groups = scrape_targets(
            self.plane.snapshot,
            control_plane=self.address or None,
            system_namespace=self.system_namespace,
            cluster=self.cluster,
        )
        return Response.json(groups)


async def serve_monitoring(
    plane: ControlPlane,
    metrics: ControlPlaneMetrics,
    closers: list[Callable[[], Awaitable[None]]],
    listen: str,
    *,
    cluster: bool = False,
) -> str:
    """The monitoring port for ``plane`` (its stopper appended to ``closers``); returns where.

    ``cluster``: ``plane`` indexes a Kubernetes cluster (``MonitoringServer``)."""
    metrics.follow(services=lambda: len(plane.snapshot.services))
    server = MonitoringServer(plane, metrics, cluster=cluster)
    address = await server.start(listen)
    closers.append(server.close)
    return address


def monitoring_address_beside(ca_address: str) -> str:
    """The monitoring address beside a certificate-service address: same host, 15014 (or
    any free port when the certificate service's is 0, as tests ask)."""
    host, _, port = ca_address.rpartition(":")
    return f"{host or '127.0.0.1'}:{0 if port == '0' else MONITORING_PORT}"


def observe_nodes(metrics: ControlPlaneMetrics, ca_service: Any, xds: Any, ca: Any) -> None:
    """Count what the certificate service and the xDS server do, and read the open streams
    and the root's expiry at each scrape."""
    ca_service.observer = xds.observer = metrics
    metrics.follow(
        streams=lambda: len(xds.nodes),
        root_expiry=lambda: min(r.not_valid_after_utc for r in ca.trust_bundle.roots).timestamp(),
    )
