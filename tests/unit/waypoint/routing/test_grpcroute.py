"""GRPCRoute at the waypoint as tables of gRPC request -> decision.

The Gateway API mesh conformance cases MeshGRPCRouteWeight and
MeshGRPCRouteRequestHeaderModifier (their manifests and expectations, on
``echo:7070`` in ``gateway-conformance-mesh``), then method matching as in
GRPCRouteExactMethodMatching, header matching (GRPCRouteHeaderMatching),
precedence, unresolvable backends (UNAVAILABLE) and the HTTPRoute/GRPCRoute
conflict rule.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ambient.config import load_text
from ambient.waypoint.model import RequestHead
from ambient.waypoint.proxy import grpc
from ambient.waypoint.routing import build_router
from tests.unit.waypoint.routing.helpers import NS, ScriptedRng, backend_name, router, svc, target

MESH = (svc("echo", 7070), svc("echo-v1", 7070), svc("echo-v2", 7070), svc("echo-v3", 7070))


def call(method: str = "/grpc.testing.TestService/UnaryCall", **headers: str) -> RequestHead:
    """A gRPC request as the waypoint sees it (HTTP/2 POST, content-type application/grpc)."""
    fields: tuple[tuple[str, str], ...] = (("content-type", "application/grpc"), ("te", "trailers"))
    fields += tuple((k.replace("_", "-"), v) for k, v in headers.items())
    return RequestHead("POST", "echo:7070", method, fields, "http", "HTTP/2")


WEIGHT = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: mesh-grpc-weighted-backends, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo, port: 7070}}]
  rules:
  - backendRefs:
    - {{name: echo-v1, port: 7070, weight: 70}}
    - {{name: echo-v2, port: 7070, weight: 30}}
    - {{name: echo-v3, port: 7070, weight: 0}}
"""


def test_mesh_grpcroute_weight() -> None:
    """70/30 over every position of the draw, echo-v3 (weight 0) never."""
    table = router(WEIGHT, MESH, rng=ScriptedRng(range(100)))
    picks = Counter(backend_name(table.route(target("echo", 7070), call())) for _ in range(100))
    assert picks == {"echo-v1": 70, "echo-v2": 30}


def test_mesh_grpcroute_weight_with_a_real_rng_within_the_conformance_tolerance() -> None:
    """The suite's check: 500 requests, each backend within 5 points of its weight."""
    table = build_router(load_text(WEIGHT, "w.yaml"), MESH, rng=random.Random(3))
    picks = Counter(backend_name(table.route(target("echo", 7070), call())) for _ in range(500))
    assert set(picks) == {"echo-v1", "echo-v2"}
    assert abs(picks["echo-v1"] / 500 - 0.7) <= 0.05
    assert abs(picks["echo-v2"] / 500 - 0.3) <= 0.05


HEADER_MODIFIER = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-request-header-modifier, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo, port: 7070}}]
  rules:
  - matches: [{{headers: [{{name: x-test-case, value: set}}]}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-header-set, value: set-overwrites-values}}]}}
    backendRefs: [{{name: echo-v1, port: 7070}}]
  - matches: [{{headers: [{{name: x-test-case, value: add}}]}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{add: [{{name: x-header-add, value: add-appends-values}}]}}
    backendRefs: [{{name: echo-v1, port: 7070}}]
  - matches: [{{headers: [{{name: x-test-case, value: remove}}]}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{remove: [x-header-remove]}}
    backendRefs: [{{name: echo-v1, port: 7070}}]
  - matches: [{{headers: [{{name: x-test-case, value: multi}}]}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: x-header-set-1, value: header-set-1}}, {{name: x-header-set-2, value: header-set-2}}]
        add: [{{name: x-header-add-1, value: header-add-1}}, {{name: x-header-add-2, value: header-add-2}}]
        remove: [x-header-remove-1, x-header-remove-2]
    backendRefs: [{{name: echo-v2, port: 7070}}]
"""


def _joined(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Header values as the echo server reports them: repeated fields joined with ','."""
    out: dict[str, str] = {}
    for name, value in headers:
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


@pytest.mark.parametrize(
    ("case", "sent", "backend", "expected", "absent"),
    [
        ("set",
         {"some-other-header": "this-header-should-be-set",
          "x-header-set": "this-value-should-be-overwritten"},
         "echo-v1",
         {"x-test-case": "set", "some-other-header": "this-header-should-be-set",
          "x-header-set": "set-overwrites-values"},
         []),
        ("add", {"x-header-add": "this-value-should-be-appended"}, "echo-v1",
         {"x-test-case": "add", "x-header-add": "this-value-should-be-appended,add-appends-values"},
         []),
        ("remove", {"x-header-remove": "this-should-be-removed"}, "echo-v1",
         {"x-test-case": "remove"}, ["x-header-remove"]),
        ("multi",
         {"x-header-set-2": "set-header-2", "x-header-add-2": "add-header-2",
          "x-header-remove-2": "should-be-removed-2"},
         "echo-v2",
         {"x-test-case": "multi", "x-header-set-1": "header-set-1",
          "x-header-set-2": "header-set-2", "x-header-add-1": "header-add-1",
          "x-header-add-2": "add-header-2,header-add-2"},
         ["x-header-remove-1", "x-header-remove-2"]),
    ],
)  # fmt: skip
def test_mesh_grpcroute_request_header_modifier(
    case: str, sent: dict[str, str], backend: str, expected: dict[str, str], absent: list[str]
) -> None:
    headers = {"x-test-case": case, **sent}
    request = RequestHead("POST", "echo:7070", "/grpc.testing.TestService/UnaryCall",
                          tuple(headers.items()), "http", "HTTP/2")  # fmt: skip
    decision = router(HEADER_MODIFIER, MESH).route(target("echo", 7070), request)
    assert backend_name(decision) == backend
    received = _joined(decision.request_headers.apply(request.headers))
    for name, value in expected.items():
        assert received.get(name) == value, (name, received)
    for name in absent:
        assert name not in received


METHODS = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: methods, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo}}]
  rules:
  - matches: [{{method: {{service: grpc.testing.TestService, method: UnaryCall}}}}]
    backendRefs: [{{name: echo-v1, port: 7070}}]
  - matches: [{{method: {{service: grpc.testing.TestService}}}}]
    backendRefs: [{{name: echo-v2, port: 7070}}]
  - matches: [{{method: {{method: EmptyCall}}}}]
    backendRefs: [{{name: echo-v3, port: 7070}}]
  - matches: [{{method: {{type: RegularExpression, service: "grpc\\\\.other\\\\..*", method: "Get.*"}}}}]
    backendRefs: [{{name: echo, port: 7070}}]
  - matches: [{{headers: [{{name: x-version, value: v2}}]}}]
    backendRefs: [{{name: echo-v2, port: 7070}}]
  - matches: [{{headers: [{{name: x-version, type: RegularExpression, value: "v[13]"}}]}}]
    backendRefs: [{{name: echo-v1, port: 7070}}]
"""


@pytest.mark.parametrize(
    ("path", "headers", "backend"),
    [
        ("/grpc.testing.TestService/UnaryCall", {}, "echo-v1"),  # service and method: exact
        ("/grpc.testing.TestService/StreamingCall", {}, "echo-v2"),  # the service's prefix
        ("/grpc.testing.TestServiceX/UnaryCall", {}, None),  # a prefix of the name: no match
        ("/other.Service/EmptyCall", {}, "echo-v3"),  # method only, any service
        ("/grpc.testing.TestService/EmptyCall", {}, "echo-v2"),  # a longer service wins
        ("/grpc.other.Things/GetThing", {}, "echo"),  # regular expressions
        ("/grpc.other.Things/PutThing", {}, None),
        ("/unmatched.Service/Call", {"x-version": "v2"}, "echo-v2"),  # headers only
        ("/unmatched.Service/Call", {"x-version": "v3"}, "echo-v1"),
        ("/unmatched.Service/Call", {}, None),
    ],
)
def test_method_and_header_matching(
    path: str, headers: dict[str, str], backend: str | None
) -> None:
    decision = router(METHODS, MESH).route(target("echo", 7070), call(path, **headers))
    assert backend_name(decision) == backend
    if backend is None:  # no rule: 404, which a gRPC client gets as UNIMPLEMENTED
        assert decision.response is not None and decision.response.status == 404
        assert grpc.http_to_grpc(decision.response.status) == 12


INVALID = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: invalid, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo}}]
  rules:
  - matches: [{{method: {{method: Missing}}}}]
    backendRefs: [{{name: does-not-exist, port: 7070}}]
  - matches: [{{method: {{method: NoBackends}}}}]
"""


@pytest.mark.parametrize("method", ["Missing", "NoBackends"])
def test_unresolvable_backends_are_unavailable(method: str) -> None:
    table = router(INVALID, MESH)
    decision = table.route(target("echo", 7070), call(f"/svc.S/{method}"))
    assert decision.response is not None and decision.response.status == 503
    assert grpc.http_to_grpc(503) == 14  # UNAVAILABLE, as GRPCBackendRef asks
    assert any(c.type == "ResolvedRefs" and not c.status for c in table.conditions)


HTTPROUTE = f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: http, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo, port: 7070}}]
  rules:
  - backendRefs: [{{name: echo-v3, port: 7070}}]
"""


@pytest.mark.parametrize(("grpc_name", "winner"), [("a-grpc", "echo-v1"), ("z-grpc", "echo-v3")])
def test_httproute_and_grpcroute_on_one_port_are_not_merged(grpc_name: str, winner: str) -> None:
    grpc_route = (
        WEIGHT.replace("mesh-grpc-weighted-backends", grpc_name)
        .replace("weight: 70", "weight: 100")
        .replace("weight: 30", "weight: 0")
    )
    table = router(grpc_route + "---\n" + HTTPROUTE, MESH, rng=random.Random(1))
    assert backend_name(table.route(target("echo", 7070), call())) == winner
    rejected = [c for c in table.conditions if c.reason == "Conflicted"]
    loser = "http" if grpc_name == "a-grpc" else grpc_name
    assert [c.name for c in rejected] == [loser] and not rejected[0].status
