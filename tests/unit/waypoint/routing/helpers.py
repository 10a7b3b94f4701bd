"""Shared fixtures for the routing tables: a small mesh, requests, a scripted RNG."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ambient.config import load_text
from ambient.waypoint.model import RequestHead, RouteDecision, Target
from ambient.waypoint.routing import MeshService, Rng, RouteTable, build_router

NS = "gateway-conformance-mesh"


def svc(name: str, *ports: int, namespace: str = NS) -> MeshService:
    return MeshService(namespace, name, f"{name}.{namespace}.svc.cluster.local", ports or (80,))


MESH = (
    svc("echo", 80, 8080),
    svc("echo-v1", 80, 8080),
    svc("echo-v2", 80, 8080),
    svc("orders", 8080, namespace="shop"),
    svc("payments", 8080, namespace="shop"),
)


class ScriptedRng:
    """Returns the scripted values in turn (each must be below ``stop``)."""

    def __init__(self, values: Iterable[int] = ()) -> None:
        self.values = list(values)
        self.calls: list[int] = []

    def randrange(self, stop: int, /) -> int:
        self.calls.append(stop)
        value = self.values.pop(0) if self.values else 0
        assert 0 <= value < stop
        return value


def router(yaml: str, services: Iterable[MeshService] = MESH, rng: Rng | None = None) -> RouteTable:
    return build_router(load_text(yaml, "routes.yaml"), services, rng=rng or ScriptedRng())


def target(name: str = "echo", port: int = 80, namespace: str = NS) -> Target:
    return Target(
        namespace,
        f"{name}.{namespace}.svc.cluster.local",
        ipaddress.ip_address("127.20.0.1"),
        port,
    )


def request(
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = "echo",
    scheme: str = "http",
) -> RequestHead:
    items = tuple((k.lower(), v) for k, v in (headers or {}).items())
    return RequestHead(method, host, path, items, scheme)


def backend_name(decision: RouteDecision) -> str | None:
    """The backend service's short name, or None for a direct response."""
    if decision.backend is None:
        return None
    return decision.backend.hostname.split(".", 1)[0]


def status(decision: RouteDecision) -> int:
    """200 for a forwarded request, else the direct response's status."""
    return 200 if decision.response is None else decision.response.status


def location(decision: RouteDecision) -> str | None:
    if decision.response is None:
        return None
    return dict(decision.response.headers).get("location")
