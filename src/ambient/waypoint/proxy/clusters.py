"""Per-cluster runtime state of the waypoint: circuit breakers and outlier detection.

A cluster is a backend's ``(service, port, subset)`` (``Backend.cluster``).
Its state is created on first use and rebuilt when the DestinationRule's
policy for it changes (requests already under way keep the state they took,
so counts stay balanced). Requests addressed to a single workload have no
cluster: no limits, no ejection.
"""

from __future__ import annotations

from collections.abc import Sequence

from ambient.waypoint.model import Backend
from ambient.waypoint.proxy.balancer import Endpoint
from ambient.waypoint.proxy.upstream import ConnectionSettings
from ambient.waypoint.resilience.outlier import OutlierDetector
from ambient.waypoint.resilience.pool import ClusterLimits
from ambient.waypoint.resilience.retry import Attempt

__all__ = ["ClusterState", "Clusters", "endpoint_key"]


def endpoint_key(endpoint: Endpoint) -> tuple[object, int]:
    return (endpoint.ip, endpoint.port)


class ClusterState:
    """One cluster's limits, outlier detector (if configured) and connection settings."""

    def __init__(self, backend: Backend) -> None:
        pool = backend.pool
        self.limits = ClusterLimits(pool)
        self.detector = OutlierDetector(backend.outlier) if backend.outlier else None
        self.connections = ConnectionSettings(
            pool.max_requests_per_connection, pool.idle_timeout, pool.connect_timeout
        )

    def select(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        """The endpoints not ejected (or all of them, in panic)."""
        if self.detector is None:
            return endpoints
        return self.detector.select(endpoints, endpoint_key)

    def record(self, endpoint: Endpoint, attempt: Attempt, cluster_size: int) -> bool:
        """Feed one attempt's outcome to outlier detection; True if the endpoint was ejected."""
        if self.detector is None:
            return False
        return self.detector.record(endpoint_key(endpoint), attempt, cluster_size)


class Clusters:
    """The waypoint's cluster states, by ``Backend.cluster``."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, int, str | None], ClusterState] = {}

    def states(self) -> list[ClusterState]:
        """Every cluster's state (for diagnostics and tests)."""
        return list(self._states.values())

    def peek(self, backend: Backend) -> ClusterState | None:
        """The cluster's state if a request made it (``ambient proxy-config``)."""
        return self._states.get(backend.cluster)

    def get(self, backend: Backend) -> ClusterState:
        state = self._states.get(backend.cluster)
        if state is None or (
            # (the same objects, the usual case, spare two dataclass comparisons)
            (state.limits.policy is not backend.pool and state.limits.policy != backend.pool)
            or (state.detector.policy if state.detector else None) != backend.outlier
        ):
            state = self._states[backend.cluster] = ClusterState(backend)
        return state
