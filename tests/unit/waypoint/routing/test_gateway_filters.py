"""HTTPRoute filters, weights and backend errors as tables of request -> decision.

Modelled on MeshHTTPRouteRedirectPort, MeshHTTPRouteRedirectPath,
MeshHTTPRouteRedirectScheme, MeshHTTPRouteRedirectHostAndStatus,
MeshHTTPRoute303/307/308Redirect, MeshHTTPRouteRewritePath / HTTPRouteRewriteHost,
MeshHTTPRouteRequestHeaderModifier, HTTPRouteResponseHeaderModifier,
HTTPRouteRequestMirror, MeshHTTPRouteWeight / HTTPRouteWeight,
HTTPRouteAllBackendsWeightZero, HTTPRouteInvalidBackendRefUnknownKind,
HTTPRouteInvalidCrossNamespaceBackendRef and HTTPRouteRequestTimeout.
"""

from __future__ import annotations

from collections import Counter

import pytest

from ambient.config.destinationrule import LoadBalancer
from ambient.waypoint.model import HeaderOps
from ambient.waypoint.routing.filters import replace_prefix
from tests.unit.waypoint.routing.helpers import (
    ScriptedRng,
    backend_name,
    location,
    request,
    router,
    status,
    target,
)


def _route(rules: str, name: str = "r") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-mesh}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo}}]
  rules:
{rules}
"""


REDIRECTS = _route("""
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /port-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /port-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-port}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-http-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, port: 80}}]
  - matches: [{path: {type: PathPrefix, value: /hostname}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 303}}]
  - matches: [{path: {type: PathPrefix, value: /status-307}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]
  - matches: [{path: {type: PathPrefix, value: /status-308}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 308}}]
  - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}
""")


@pytest.mark.parametrize(
    ("port", "path", "code", "expected"),
    [
        (80, "/port", 302, "http://echo:8083/port"),
        (80, "/port-and-host", 302, "http://example.org:8083/port-and-host"),
        (80, "/port-and-status", 301, "http://echo:8083/port-and-status"),
        (80, "/scheme", 302, "https://echo/scheme"),  # well-known port of the new scheme
        (80, "/scheme-and-port", 302, "https://echo:8443/scheme-and-port"),
        (8080, "/scheme-http-80", 302, "http://echo/scheme-http-80"),
        (80, "/hostname", 303, "http://example.org/hostname"),  # the dialled port, 80: left out
        (8080, "/hostname", 303, "http://example.org:8080/hostname"),  # the dialled port
        (80, "/status-307", 307, "http://echo/status-307"),
        (80, "/status-308", 308, "http://echo/status-308"),
        (80, "/original-prefix/lemon?x=1", 302, "http://echo/replacement-prefix/lemon?x=1"),
        (80, "/original-prefix", 302, "http://echo/replacement-prefix"),
        (80, "/full/one/two", 302, "http://echo/full-path-replacement"),
    ],
)
def test_redirects(port: int, path: str, code: int, expected: str) -> None:
    decision = router(REDIRECTS).route(target(port=port), request(path, host=f"echo:{port}"))
    assert decision.backend is None
    assert status(decision) == code
    assert location(decision) == expected


@pytest.mark.parametrize(
    ("path", "prefix", "replacement", "expected"),
    [  # the Gateway API's ReplacePrefixMatch table
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
    ],
)
def test_replace_prefix_match_table(
    path: str, prefix: str, replacement: str, expected: str
) -> None:
    assert replace_prefix(path, prefix, replacement) == expected


REWRITES = _route("""
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: one.example.org}
    backendRefs: [{name: echo-v1, port: 80}]
""")


@pytest.mark.parametrize(
    ("path", "new_path", "authority"),
    [
        ("/prefix/one/two", "/one/two", None),
        ("/prefix/one", "/one", None),
        ("/strip-prefix/three", "/three", None),
        ("/strip-prefix", "/", None),
        ("/full/one/two?q=1", "/one?q=1", None),  # the query string survives
        ("/host/x", None, "one.example.org"),
    ],
)
def test_url_rewrites(path: str, new_path: str | None, authority: str | None) -> None:
    decision = router(REWRITES).route(target(), request(path))
    assert backend_name(decision) == "echo-v1"
    assert (decision.path, decision.authority) == (new_path, authority)


HEADER_MODIFIERS = _route("""
  - matches: [{path: {type: Exact, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: Exact, value: /multiple}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}]
        add: [{name: X-Header-Add-1, value: header-add-1}]
        remove: [X-Header-Remove-1]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-Resp-Add, value: added}], remove: [Server]}
    backendRefs:
    - name: echo
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-header-set-1, value: from-backend}]}
""")


def test_request_header_modifier_set_add_remove() -> None:
    table = router(HEADER_MODIFIERS)
    decision = table.route(target(), request("/multiple"))
    assert decision.request_headers == HeaderOps(
        set=(("x-header-set-1", "from-backend"), ("x-header-set-2", "header-set-2")),
        add=(("x-header-add-1", "header-add-1"),),
        remove=("x-header-remove-1",),
    )
    assert decision.response_headers == HeaderOps(
        add=(("x-resp-add", "added"),), remove=("server",)
    )
    received = decision.request_headers.apply(
        (
            ("x-header-set-1", "old"),
            ("x-header-add-1", "existing"),
            ("x-header-remove-1", "gone"),
            ("other", "kept"),
        )
    )
    assert received == (
        ("x-header-add-1", "existing"),
        ("other", "kept"),
        ("x-header-set-1", "from-backend"),
        ("x-header-set-2", "header-set-2"),
        ("x-header-add-1", "header-add-1"),
    )


def test_request_header_modifier_set_replaces_every_value() -> None:
    decision = router(HEADER_MODIFIERS).route(target(), request("/set"))
    result = decision.request_headers.apply((("x-header-set", "a"), ("x-header-set", "b")))
    assert result == (("x-header-set", "set-overwrites-values"),)


MIRROR = _route("""
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: echo-v2, port: 80}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: echo-v1, port: 8080}, fraction: {numerator: 1, denominator: 4}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: missing, port: 80}, percent: 50}
    backendRefs: [{name: echo, port: 80}]
""")


def test_request_mirror() -> None:
    table = router(MIRROR)
    decision = table.route(target(), request("/mirror"))
    assert backend_name(decision) == "echo"
    mirrors = [
        (m.backend.hostname.split(".")[0], m.backend.port, m.percent) for m in decision.mirrors
    ]
    assert mirrors == [("echo-v2", 80, 100.0), ("echo-v1", 8080, 25.0)]
    assert any(
        "mirror: Service gateway-conformance-mesh/missing not found" in c.message
        for c in table.conditions
    )


WEIGHTS = _route("""
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - {name: echo-v1, port: 80, weight: 70}
    - {name: echo-v2, port: 80, weight: 30}
    - {name: echo, port: 80, weight: 0}
  - matches: [{path: {type: PathPrefix, value: /zero}}]
    backendRefs:
    - {name: echo-v1, port: 80, weight: 0}
    - {name: echo-v2, port: 80, weight: 0}
  - matches: [{path: {type: PathPrefix, value: /none}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: a, value: b}]}
  - matches: [{path: {type: PathPrefix, value: /invalid}}]
    backendRefs:
    - {name: echo-v1, port: 80, weight: 1}
    - {name: does-not-exist, port: 80, weight: 1}
  - matches: [{path: {type: PathPrefix, value: /kind}}]
    backendRefs: [{name: echo-v1, kind: Pod, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /elsewhere}}]
    backendRefs: [{name: orders, namespace: shop, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /badport}}]
    backendRefs: [{name: echo-v1, port: 9999}]
""")


def test_weights_split_by_weight_and_skip_zero() -> None:
    """HTTPRouteWeight: 70/30 over every position of the random draw; weight 0 never picked."""
    rng = ScriptedRng(range(100))
    table = router(WEIGHTS, rng=rng)
    picks = Counter(backend_name(table.route(target(), request("/split"))) for _ in range(100))
    assert picks == {"echo-v1": 70, "echo-v2": 30}
    assert set(rng.calls) == {100}


def test_weights_with_a_real_rng_are_roughly_proportional() -> None:
    import random

    from ambient.config import load_text
    from ambient.waypoint.routing import build_router
    from tests.unit.waypoint.routing.helpers import MESH

    table = build_router(load_text(WEIGHTS, "w.yaml"), MESH, rng=random.Random(7))
    picks = Counter(backend_name(table.route(target(), request("/split"))) for _ in range(2000))
    assert 0.65 < picks["echo-v1"] / 2000 < 0.75


@pytest.mark.parametrize(
    ("path", "code"),
    [("/zero", 500), ("/none", 500), ("/kind", 500), ("/elsewhere", 500), ("/badport", 500)],
)
def test_unresolvable_backends_answer_500(path: str, code: int) -> None:
    decision = router(WEIGHTS).route(target(), request(path))
    assert decision.backend is None
    assert status(decision) == code


def test_invalid_backend_keeps_its_share() -> None:
    """Half the weight goes to a missing Service: that half gets 500, the rest is served."""
    table = router(WEIGHTS, rng=ScriptedRng([0, 1]))
    first = table.route(target(), request("/invalid"))
    second = table.route(target(), request("/invalid"))
    assert backend_name(first) == "echo-v1"
    assert status(second) == 500


def test_conditions_name_each_unresolved_ref() -> None:
    reasons = {(c.type, c.reason) for c in router(WEIGHTS).conditions}
    assert reasons == {
        ("ResolvedRefs", "BackendNotFound"),
        ("ResolvedRefs", "InvalidKind"),
        ("ResolvedRefs", "RefNotPermitted"),
    }
    messages = {c.message for c in router(WEIGHTS).conditions}
    assert "Service gateway-conformance-mesh/does-not-exist not found" in messages
    assert "Service gateway-conformance-mesh/echo-v1 has no port 9999" in messages


def test_request_timeout() -> None:
    table = router(
        _route("""
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 1m30s}
    backendRefs: [{name: echo, port: 80}]
  - timeouts: {request: 0s}
    backendRefs: [{name: echo, port: 80}]
""")
    )
    assert table.route(target(), request("/slow")).timeout == 90.0
    assert table.route(target(), request("/fast")).timeout is None


def test_load_balancer_from_destination_rule_applies_to_httproute_backends() -> None:
    table = router(
        WEIGHTS
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo-v1, namespace: gateway-conformance-mesh}
spec:
  host: echo-v1
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
""",
        rng=ScriptedRng([0]),
    )
    decision = table.route(target(), request("/split"))
    assert decision.backend is not None
    assert decision.backend.load_balancer is LoadBalancer.LEAST_REQUEST
