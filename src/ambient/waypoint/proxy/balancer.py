"""Endpoints of a backend and L7 load balancing: one pick per request.

``endpoints_of`` lists a backend's usable endpoints from the ProxyState:
healthy workloads of the service that have an address, are in the mesh
(HBONE; the waypoint does not send plaintext), serve the requested service
port, and belong to the backend's DestinationRule subset.

Pickers (DestinationRule ``loadBalancer.simple``):

- ``ROUND_ROBIN`` (default): rotates per backend (service, port, subset);
- ``LEAST_REQUEST``: Envoy's power of two choices: two endpoints drawn at
  random, the one with fewer requests in flight wins (ties: the first);
- ``RANDOM``: uniform.

``loadBalancer.consistentHash``: the request's hash key (``proxy.hashing``)
picks the endpoint; without a key, uniform.

In-flight counts are kept by :class:`Balancer` itself: ``started`` when a
request is sent to an endpoint, ``finished`` when its response is done.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ambient.config.destinationrule import LoadBalancer
from ambient.ipparse import address_text
from ambient.state.proxy import ProxyState
from ambient.state.workload import IPAddress, TunnelProtocol, Workload, WorkloadStatus
from ambient.waypoint.model import Backend
from ambient.waypoint.proxy.hashing import HashTables

__all__ = ["Balancer", "Endpoint", "endpoints_of"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream: a workload and the port it serves the backend on.

    ``address`` (``ip:port``, ``[ip]:port`` for IPv6) is formatted once; it also keys
    the per-endpoint tables (in-flight counts, idle connections): a string hashes in C,
    an ``ip_address`` in Python."""

    workload: Workload
    ip: IPAddress
    port: int
    address: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", address_text(self.ip, self.port))


def endpoints_of(state: ProxyState, backend: Backend) -> list[Endpoint]:
    """The backend's usable endpoints, in a stable order (empty: none healthy, or no such service)."""
    service = state.services.get(backend.service_key)
    if service is None:
        return []
    result = []
    for workload in state.endpoints(service):
        if (
            workload.status is not WorkloadStatus.HEALTHY
            or not workload.addresses
            or workload.tunnel_protocol is not TunnelProtocol.HBONE
            or not backend.selects(workload.labels)
        ):
            continue
        port = state.workload_port(service, workload, backend.port)
        if port is not None:
            result.append(Endpoint(workload, workload.addresses[0], port))
    return result


class Balancer:
    """Picks an endpoint per request and counts requests in flight per endpoint."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._rotation: dict[tuple[str, int, str | None], itertools.count[int]] = {}
        self.in_flight: dict[str, int] = {}  # by Endpoint.address
        self.tables = HashTables()

    def pick(
        self, backend: Backend, endpoints: Sequence[Endpoint], key: int | None = None
    ) -> Endpoint | None:
        """One of ``endpoints`` by the backend's policy (``key``: the consistent hash's)."""
        if not endpoints:
            return None
        if len(endpoints) == 1:
            return endpoints[0]
        hashing = backend.consistent_hash
        if hashing is not None:
            if key is None:
                return self._rng.choice(endpoints)
            ids = [e.address for e in endpoints]
            return self.tables.pick(hashing, endpoints, ids, key)
        policy = backend.load_balancer
        if policy is LoadBalancer.RANDOM:
            return self._rng.choice(endpoints)
        if policy is LoadBalancer.LEAST_REQUEST:
            first, second = self._rng.sample(range(len(endpoints)), 2)
            a, b = endpoints[first], endpoints[second]
            return b if self._load(b) < self._load(a) else a
        cluster = (backend.service_key, backend.port, backend.subset)
        counter = self._rotation.get(cluster)
        if counter is None:
            counter = self._rotation[cluster] = itertools.count()
        return endpoints[next(counter) % len(endpoints)]

    def started(self, endpoint: Endpoint) -> None:
        key = endpoint.address
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def finished(self, endpoint: Endpoint) -> None:
        key = endpoint.address
        left = self.in_flight.get(key, 0) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)

    def _load(self, endpoint: Endpoint) -> int:
        return self.in_flight.get(endpoint.address, 0)
