"""HTTPRoute matching and precedence, as tables of request -> backend and status.

Modelled on the Gateway API conformance tests HTTPRouteMatching /
MeshHTTPRouteMatching, HTTPRouteMatchingAcrossRoutes, HTTPRouteHeaderMatching,
HTTPRouteQueryParamMatching / MeshHTTPRouteQueryParamMatching,
HTTPRouteMethodMatching, HTTPRoutePathMatchOrder, MeshPorts and
MeshFrontendHostname (same manifests, our service names).
"""

from __future__ import annotations

import pytest

from tests.unit.waypoint.routing.helpers import backend_name, request, router, status, target

PARENT = """
  parentRefs:
  - {group: "", kind: Service, name: echo}
"""

MATCHING = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mesh-matching, namespace: gateway-conformance-mesh}}
spec:{PARENT}
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /}}
    - headers: [{{name: version, value: one}}]
    backendRefs: [{{name: echo-v1, port: 80}}]
  - matches:
    - path: {{type: PathPrefix, value: /v2}}
    - headers: [{{name: version, value: two}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
"""


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/", {}, "echo-v1"),
        ("/example", {}, "echo-v1"),
        ("/", {"Version": "one"}, "echo-v1"),
        ("/v2", {}, "echo-v2"),
        ("/v2/example", {}, "echo-v2"),
        ("/v2example", {}, "echo-v1"),  # PathPrefix matches whole segments
        ("/", {"Version": "two"}, "echo-v2"),
    ],
)
def test_mesh_httproute_matching(path: str, headers: dict[str, str], expected: str) -> None:
    decision = router(MATCHING).route(target(), request(path, headers=headers))
    assert backend_name(decision) == expected
    assert decision.route == "gateway-conformance-mesh/mesh-matching"


PATH_ORDER = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: path-matching-order, namespace: gateway-conformance-mesh}}
spec:{PARENT}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /match}}}}]
    backendRefs: [{{name: echo, port: 80}}]
  - matches: [{{path: {{type: Exact, value: /match/exact}}}}]
    backendRefs: [{{name: echo-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /match/prefix/one}}}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
  - matches: [{{path: {{type: RegularExpression, value: "/match/[a-z]+/regex"}}}}]
    backendRefs: [{{name: echo-v2, port: 8080}}]
"""


@pytest.mark.parametrize(
    ("path", "expected", "port"),
    [
        ("/match", "echo", 80),
        ("/match/exact", "echo-v1", 80),  # exact beats a shorter prefix listed first
        ("/match/exact/one", "echo", 80),
        ("/match/prefix/one/two", "echo-v2", 80),  # longest prefix
        ("/match/prefix", "echo", 80),
        ("/match/abc/regex", "echo-v2", 8080),  # regex beats prefixes
        ("/match/abc/regex/more", "echo", 80),  # regexes match the whole path
    ],
)
def test_path_precedence(path: str, expected: str, port: int) -> None:
    decision = router(PATH_ORDER).route(target(), request(path))
    assert backend_name(decision) == expected
    assert decision.backend is not None and decision.backend.port == port


def test_unmatched_request_on_attached_service_is_404() -> None:
    decision = router(PATH_ORDER).route(target(), request("/other"))
    assert status(decision) == 404
    assert decision.route == "gateway-conformance-mesh/path-matching-order"


ACROSS_ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-catch-all, namespace: gateway-conformance-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: x, value: "1"}]}]
    backendRefs: [{name: echo-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-specific, namespace: gateway-conformance-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches:
    - {path: {type: PathPrefix, value: /}, method: POST}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /}
      headers: [{name: x, value: "1"}, {name: y, value: "2"}]
    backendRefs: [{name: echo-v2, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /}
      headers: [{name: x, value: "1"}]
      queryParams: [{name: q, value: "1"}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /}
    backendRefs: [{name: echo-v2, port: 80}]
"""


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/", {}, ("echo", 80)),  # same match in both routes: a-catch-all sorts first
        ("POST", "/", {"x": "1", "y": "2"}, ("echo-v1", 80)),  # method beats headers
        ("GET", "/", {"x": "1", "y": "2"}, ("echo-v2", 80)),  # most headers
        ("GET", "/?q=1", {"x": "1"}, ("echo-v2", 8080)),  # then most query params
        ("GET", "/?q=2", {"x": "1"}, ("echo-v1", 8080)),  # then route order
    ],
)
def test_precedence_across_routes(
    method: str, path: str, headers: dict[str, str], expected: tuple[str, int]
) -> None:
    decision = router(ACROSS_ROUTES).route(target(), request(path, method, headers))
    assert decision.backend is not None
    assert (backend_name(decision), decision.backend.port) == expected


HEADERS = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: header-matching, namespace: gateway-conformance-mesh}}
spec:{PARENT}
  rules:
  - matches: [{{headers: [{{name: version, value: one}}]}}]
    backendRefs: [{{name: echo-v1, port: 80}}]
  - matches: [{{headers: [{{name: version, value: two}}]}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
  - matches: [{{headers: [{{name: version, value: two}}, {{name: color, value: orange}}]}}]
    backendRefs: [{{name: echo-v1, port: 8080}}]
  - matches: [{{headers: [{{name: color, value: blue}}]}}, {{headers: [{{name: color, value: green}}]}}]
    backendRefs: [{{name: echo-v1, port: 80}}]
  - matches: [{{headers: [{{name: color, value: red}}]}}, {{headers: [{{name: color, value: yellow}}]}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
  - matches: [{{headers: [{{name: grade, type: RegularExpression, value: "[A-C]"}}]}}]
    backendRefs: [{{name: echo-v2, port: 8080}}]
"""


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Version": "one"}, ("echo-v1", 80)),
        ({"Version": "two"}, ("echo-v2", 80)),
        ({"Version": "two", "Color": "orange"}, ("echo-v1", 8080)),
        ({"Color": "blue"}, ("echo-v1", 80)),
        ({"Color": "green"}, ("echo-v1", 80)),
        ({"Color": "red"}, ("echo-v2", 80)),
        ({"Color": "yellow"}, ("echo-v2", 80)),
        ({"Grade": "B"}, ("echo-v2", 8080)),
        ({"Grade": "BB"}, 404),  # full match
        ({"Version": "ONE"}, 404),  # values are case-sensitive
        ({"Color": "purple"}, 404),
        ({}, 404),
    ],
)
def test_header_matching(headers: dict[str, str], expected: tuple[str, int] | int) -> None:
    decision = router(HEADERS).route(target(), request("/", headers=headers))
    if isinstance(expected, int):
        assert status(decision) == expected
    else:
        assert decision.backend is not None
        assert (backend_name(decision), decision.backend.port) == expected


QUERY = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: query-param-matching, namespace: gateway-conformance-mesh}}
spec:{PARENT}
  rules:
  - matches: [{{queryParams: [{{name: animal, value: whale}}]}}]
    backendRefs: [{{name: echo-v1, port: 80}}]
  - matches: [{{queryParams: [{{name: animal, value: dolphin}}]}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
  - matches: [{{queryParams: [{{name: animal, value: dolphin}}, {{name: color, value: blue}}]}}]
    backendRefs: [{{name: echo-v1, port: 8080}}]
  - matches: [{{queryParams: [{{name: id, type: RegularExpression, value: "[0-9]+"}}]}}]
    backendRefs: [{{name: echo-v2, port: 8080}}]
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/?animal=whale", ("echo-v1", 80)),
        ("/?animal=dolphin", ("echo-v2", 80)),
        ("/?animal=dolphin&color=blue", ("echo-v1", 8080)),
        ("/?color=blue&animal=dolphin", ("echo-v1", 8080)),
        ("/?animal=whale&animal=dolphin", ("echo-v1", 80)),  # first value counts
        ("/?id=42", ("echo-v2", 8080)),
        ("/?id=42x", 404),
        ("/?ANIMAL=whale", 404),  # names are case-sensitive
        ("/?animal=shark", 404),
        ("/", 404),
    ],
)
def test_query_param_matching(path: str, expected: tuple[str, int] | int) -> None:
    decision = router(QUERY).route(target(), request(path))
    if isinstance(expected, int):
        assert status(decision) == expected
    else:
        assert decision.backend is not None
        assert (backend_name(decision), decision.backend.port) == expected


METHOD = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: method-matching, namespace: gateway-conformance-mesh}}
spec:{PARENT}
  rules:
  - matches: [{{method: POST}}]
    backendRefs: [{{name: echo-v1, port: 80}}]
  - matches: [{{method: GET}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /path1}}, method: GET}}]
    backendRefs: [{{name: echo-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /path2}}}}, {{method: PATCH}}]
    backendRefs: [{{name: echo-v2, port: 8080}}]
"""


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/", ("echo-v1", 80)),
        ("GET", "/", ("echo-v2", 80)),
        ("GET", "/path1", ("echo-v1", 8080)),
        ("POST", "/path2", ("echo-v2", 8080)),
        ("PATCH", "/", ("echo-v2", 8080)),
        ("HEAD", "/", 404),
        ("DELETE", "/path1", 404),
    ],
)
def test_method_matching(method: str, path: str, expected: tuple[str, int] | int) -> None:
    decision = router(METHOD).route(target(), request(path, method))
    if isinstance(expected, int):
        assert status(decision) == expected
    else:
        assert decision.backend is not None
        assert (backend_name(decision), decision.backend.port) == expected


PORTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-ports, namespace: gateway-conformance-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-v1, port: 80}]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: X-Header-Set, value: v1}]}
    backendRefs: [{name: echo-v1, port: 80}]
"""


def test_parent_port_narrows_attachment() -> None:
    """MeshPorts: the route applies on port 80 only; 8080 keeps the default route."""
    table = router(PORTS)
    on_80 = table.route(target("echo-v1", 80), request("/", host="echo-v1"))
    on_8080 = table.route(target("echo-v1", 8080), request("/", host="echo-v1"))
    assert on_80.route == "gateway-conformance-mesh/mesh-ports"
    assert on_80.response_headers.set == (("x-header-set", "v1"),)
    assert on_8080.route == "default"
    assert on_8080.backend is not None and on_8080.backend.port == 8080
    assert on_8080.response_headers.empty


def test_attachment_follows_addressed_service_not_host_header() -> None:
    """MeshFrontendHostname: a Host header naming another service does not change the route."""
    table = router(PORTS)
    to_v2 = table.route(target("echo-v2", 80), request("/", host="echo-v1"))
    assert to_v2.route == "default"
    assert backend_name(to_v2) == "echo-v2"


def test_nothing_attached_forwards_to_addressed_service() -> None:
    decision = router("").route(target("echo", 8080), request("/anything"))
    assert decision.route == "default"
    assert decision.backend is not None
    assert (decision.backend.hostname, decision.backend.port) == (
        "echo.gateway-conformance-mesh.svc.cluster.local",
        8080,
    )


def test_workload_target_forwards_to_the_workload() -> None:
    from ipaddress import ip_address

    from ambient.waypoint.model import Target

    decision = router(MATCHING).route(
        Target("ns", None, ip_address("127.10.0.5"), 9000), request("/")
    )
    assert decision.backend is not None
    assert (decision.backend.hostname, decision.backend.port) == ("127.10.0.5", 9000)
