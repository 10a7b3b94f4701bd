"""VirtualService + DestinationRule routing, including the seed guide's canary (section 6)."""

from __future__ import annotations

from collections import Counter

import pytest

from ambient.config.destinationrule import LoadBalancer
from ambient.frozen import FrozenMap
from ambient.waypoint.model import HeaderOps
from tests.unit.waypoint.routing.helpers import (
    ScriptedRng,
    backend_name,
    location,
    request,
    router,
    status,
    target,
)

CANARY = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders, namespace: shop}
spec:
  host: orders.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets:
  - name: v1
    labels: { version: v1 }
  - name: v2
    labels: { version: v2 }
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts:
  - orders.shop.svc.cluster.local
  http:
  - match:
    - headers:
        x-canary:
          exact: always
    route:
    - destination: { host: orders.shop.svc.cluster.local, subset: v2 }
  - route:
    - destination: { host: orders.shop.svc.cluster.local, subset: v1 }
      weight: 90
    - destination: { host: orders.shop.svc.cluster.local, subset: v2 }
      weight: 10
"""


def orders() -> tuple[str, int]:
    return ("orders", 8080)


def test_canary_90_10_by_weight() -> None:
    table = router(CANARY, rng=ScriptedRng(range(100)))
    t = target("orders", 8080, "shop")
    backends = [table.route(t, request("/", host="orders:8080")).backend for _ in range(100)]
    subsets = Counter(b.subset for b in backends if b is not None)
    assert subsets == {"v1": 90, "v2": 10}


def test_canary_header_always_goes_to_v2() -> None:
    table = router(CANARY, rng=ScriptedRng([0] * 50))
    t = target("orders", 8080, "shop")
    for _ in range(50):
        decision = table.route(t, request("/", headers={"X-Canary": "always"}))
        assert decision.backend is not None
        assert decision.backend.subset == "v2"
        assert decision.backend.subset_labels == FrozenMap({"version": "v2"})
        assert decision.backend.load_balancer is LoadBalancer.RANDOM  # subset-level override
    decision = table.route(t, request("/", headers={"X-Canary": "sometimes"}))
    assert decision.backend is not None and decision.backend.subset == "v1"
    assert decision.backend.load_balancer is LoadBalancer.LEAST_REQUEST
    assert decision.route == "shop/orders"


FEATURES = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments]
  http:
  - match: [{uri: {exact: /exact}}]
    route: [{destination: {host: orders}}]
  - match: [{uri: {prefix: /API}, ignoreUriCase: true}]
    rewrite: {uri: /v2/api}
    route: [{destination: {host: payments}}]
  - match: [{uri: {regex: "/items/[0-9]+"}, method: {exact: DELETE}}]
    route: [{destination: {host: payments}}]
    timeout: 1.5s
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: example.org, redirectCode: 308}
  - match: [{uri: {prefix: /https}}]
    redirect: {scheme: https}
  - match: [{uri: {prefix: /regex-rewrite}}]
    rewrite: {uriRegexRewrite: {match: "^/regex-rewrite/(.*)$", rewrite: "/\\\\1/done"}, authority: internal}
    route: [{destination: {host: payments}}]
  - match: [{queryParams: {debug: {exact: "1"}}, withoutHeaders: {x-prod: {}}}]
    headers:
      request: {set: {x-debug: "on"}, add: {x-trace: "1"}, remove: [cookie]}
      response: {set: {x-served-by: payments}}
    route:
    - destination: {host: payments}
      headers: {request: {set: {x-debug: dest}}}
    mirror: {host: orders}
    mirrorPercentage: {value: 12.5}
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /missing-subset}}]
    route: [{destination: {host: payments, subset: nope}}]
  - match: [{uri: {prefix: /unknown-host}}]
    route: [{destination: {host: nowhere.example.com}}]
"""


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/exact", {}, ("orders", 200, None)),
        ("GET", "/exact/more", {}, (None, 404, None)),
        ("GET", "/api/x?y=1", {}, ("payments", 200, "/v2/api/x?y=1")),  # prefix swapped
        ("GET", "/Api/x", {}, ("payments", 200, "/v2/api/x")),  # ignoreUriCase
        ("DELETE", "/items/42", {}, ("payments", 200, None)),
        ("GET", "/items/42", {}, (None, 404, None)),
        ("GET", "/regex-rewrite/a/b", {}, ("payments", 200, "/a/b/done")),
        ("GET", "/?debug=1", {}, ("payments", 200, None)),
        ("GET", "/?debug=1", {"x-prod": "yes"}, (None, 404, None)),  # withoutHeaders
        ("GET", "/missing-subset", {}, (None, 503, None)),
        ("GET", "/unknown-host", {}, (None, 503, None)),
    ],
)
def test_virtual_service_matching_and_rewrites(
    method: str, path: str, headers: dict[str, str], expected: tuple[str | None, int, str | None]
) -> None:
    decision = router(FEATURES).route(
        target("payments", 8080, "shop"), request(path, method, headers)
    )
    assert (backend_name(decision), status(decision), decision.path) == expected


def test_virtual_service_redirects() -> None:
    table = router(FEATURES)
    t = target("payments", 8080, "shop")
    moved = table.route(t, request("/old/page?x=1", host="payments:8080"))
    assert (status(moved), location(moved)) == (308, "http://example.org/new?x=1")
    secure = table.route(t, request("/https", host="payments:8080"))
    assert (status(secure), location(secure)) == (301, "https://payments/https")


def test_virtual_service_headers_mirror_timeout_direct_response() -> None:
    table = router(FEATURES)
    t = target("payments", 8080, "shop")
    debug = table.route(t, request("/?debug=1"))
    assert debug.request_headers == HeaderOps(
        set=(("x-debug", "dest"),), add=(("x-trace", "1"),), remove=("cookie",)
    )
    assert debug.response_headers == HeaderOps(set=(("x-served-by", "payments"),))
    assert [(m.backend.hostname, m.backend.port, m.percent) for m in debug.mirrors] == [
        ("orders.shop.svc.cluster.local", 8080, 12.5)
    ]
    assert table.route(t, request("/items/1", "DELETE")).timeout == 1.5
    teapot = table.route(t, request("/teapot"))
    assert teapot.response is not None
    assert (teapot.response.status, teapot.response.body) == (418, b"short and stout")
    regex = table.route(t, request("/regex-rewrite/z"))
    assert regex.authority == "internal"


def test_conditions_for_unresolved_destinations() -> None:
    messages = {c.message for c in router(FEATURES).conditions}
    assert (
        "subset 'nope' of payments.shop.svc.cluster.local is not defined by any DestinationRule"
        in messages
    )
    assert "destination host 'nowhere.example.com' is not a service of the mesh" in messages


TWO_APIS = (
    CANARY
    + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-gw, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: orders}]
  rules:
  - backendRefs: [{name: payments, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-orders-other, namespace: shop}
spec:
  hosts: [payments]
  http:
  - route: [{destination: {host: orders}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-orders-other, namespace: shop}
spec:
  hosts: [payments]
  http:
  - route: [{destination: {host: payments}}]
"""
)


def test_httproute_takes_precedence_over_virtual_service() -> None:
    table = router(TWO_APIS)
    decision = table.route(
        target("orders", 8080, "shop"), request("/", headers={"x-canary": "always"})
    )
    assert decision.route == "shop/orders-gw"
    assert backend_name(decision) == "payments"
    overridden = [c for c in table.conditions if c.reason == "Overridden"]
    assert {(c.name, c.message.split(";")[0]) for c in overridden} == {
        ("orders", "HTTPRoutes attach to orders.shop.svc.cluster.local"),
        (
            "b-orders-other",
            "VirtualService shop/a-orders-other applies to payments.shop.svc.cluster.local",
        ),
    }


def test_first_virtual_service_for_a_host_applies_alone() -> None:
    decision = router(TWO_APIS).route(target("payments", 8080, "shop"), request("/"))
    assert decision.route == "shop/a-orders-other"
    assert backend_name(decision) == "orders"
