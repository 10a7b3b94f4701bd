"""GRPCRoute documents: what loads, and one clear line with the field path for what does not."""

from __future__ import annotations

import pytest

from ambient.config import ConfigError, load_text
from ambient.config.grpcroute import GRPCRoute, MethodMatch

ROUTE = """apiVersion: gateway.networking.k8s.io/{version}
kind: GRPCRoute
metadata: {{name: bad, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo, port: 7070}}]
  rules:
  - {rule}
"""


def load(rule: str, version: str = "v1") -> GRPCRoute:
    (route,) = load_text(ROUTE.format(rule=rule, version=version), "r.yaml")
    assert isinstance(route, GRPCRoute)
    return route


def test_a_full_route_loads() -> None:
    route = load(
        "matches: [{method: {service: grpcapp.Echo, method: Unary},"
        " headers: [{name: x-test-case, value: set}, {name: x-re, type: RegularExpression,"
        " value: 'a.*'}]}]\n"
        "    filters: [{type: RequestHeaderModifier, requestHeaderModifier:"
        " {set: [{name: x-a, value: b}], add: [{name: x-b, value: c}], remove: [x-c]}},"
        " {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-r, value: s}]}},"
        " {type: RequestMirror, requestMirror: {backendRef: {name: echo-v3, port: 7070}}}]\n"
        "    backendRefs: [{name: echo-v1, port: 7070, weight: 70},"
        " {name: echo-v2, port: 7070, weight: 30, filters: [{type: RequestHeaderModifier,"
        " requestHeaderModifier: {set: [{name: x-v, value: '2'}]}}]}]"
    )
    rule = route.spec.rules[0]
    assert rule.matches[0].method == MethodMatch("Exact", "grpcapp.Echo", "Unary")
    assert [f.type for f in rule.filters] == [
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
    ]
    assert [(b.name, b.weight) for b in rule.backend_refs] == [("echo-v1", 70), ("echo-v2", 30)]
    assert load("backendRefs: [{name: echo, port: 7070}]", "v1alpha2").api_version.endswith(
        "v1alpha2"
    )


def test_an_empty_rule_matches_everything() -> None:
    (route,) = load_text(
        ROUTE.format(rule="backendRefs: [{name: echo, port: 7070}]", version="v1"), "r.yaml"
    )
    assert isinstance(route, GRPCRoute)
    assert route.spec.rules[0].matches[0].method is None


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("matches: [{method: {type: Exact}}]",
         "spec.rules[0].matches[0].method: one or both of 'service' or 'method' must be specified"),
        ("matches: [{method: {service: 'grpc.Echo!'}}]",
         "spec.rules[0].matches[0].method.service: 'grpc.Echo!' must only contain valid characters"),
        ("matches: [{method: {service: 'a..b'}}]",
         "spec.rules[0].matches[0].method.service: 'a..b' must only contain valid characters"),
        ("matches: [{method: {method: '1Unary'}}]",
         "spec.rules[0].matches[0].method.method: '1Unary' must only contain valid characters"),
        ("matches: [{method: {method: 'Un.ary'}}]",
         "spec.rules[0].matches[0].method.method: 'Un.ary' must only contain valid characters"),
        ("matches: [{method: {type: RegularExpression, method: '(?=x)'}}]",
         "spec.rules[0].matches[0].method.method: invalid regex '(?=x)'"),
        ("matches: [{method: {type: Prefix, service: a}}]",
         "spec.rules[0].matches[0].method.type: must be one of Exact, RegularExpression"),
        ("matches: [{method: {service: a, path: /x}}]",
         "spec.rules[0].matches[0].method.path: unknown field"),
        ("matches: [{headers: [{name: X-A, value: a}, {name: x-a, value: b}]}]",
         "spec.rules[0].matches[0].headers[1].name: duplicate name 'x-a'"),
        ("matches: [{headers: [{name: 'bad name', value: a}]}]",
         "spec.rules[0].matches[0].headers[0].name:"),
        ("matches: [{headers: [{name: x, value: ''}]}]",
         "spec.rules[0].matches[0].headers[0].value: must be 1 to 4096 characters long"),
        ("matches: [{path: {value: /}}]", "spec.rules[0].matches[0].path: unknown field"),
        ("filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]",
         "spec.rules[0].filters[0].type: must be one of"),
        ("filters: [{type: ExtensionRef, extensionRef: {group: g, kind: k, name: n}}]",
         "spec.rules[0].filters[0]"),
        ("filters: [{type: RequestHeaderModifier}]",
         "spec.rules[0].filters[0].requestHeaderModifier: required when type is RequestHeaderModifier"),
        ("filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: []}},"
         " {type: RequestHeaderModifier, requestHeaderModifier: {set: []}}]",
         "spec.rules[0].filters[1].type: RequestHeaderModifier may appear once"),
        ("backendRefs: [{name: echo}]", "spec.rules[0].backendRefs[0].port: required when referring to a Service"),
        ("backendRefs: [{name: echo, port: 7070, weight: 1000001}]",
         "spec.rules[0].backendRefs[0].weight:"),
        ("backendRefs: [{name: echo, port: 7070, filters: [{type: RequestMirror,"
         " requestMirror: {backendRef: {name: m, port: 1}}}]}]",
         "spec.rules[0].backendRefs[0].filters[0].type: not supported on a backendRef"),
        ("sessionPersistence: {sessionName: x}", "spec.rules[0].sessionPersistence"),
        ("timeouts: {request: 1s}", "spec.rules[0].timeouts: unknown field"),
    ],
)  # fmt: skip
def test_load_errors_name_the_field(rule: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(rule)
    assert expected in str(error.value), str(error.value)


def test_route_wide_limits() -> None:
    many_matches = "\n".join(
        "  - matches: [" + ", ".join(["{method: {service: s}}"] * 60) + "]" for _ in range(3)
    )
    doc = ROUTE.format(rule="{}", version="v1").replace("  - {}", many_matches.strip("\n"))
    with pytest.raises(ConfigError) as error:
        load_text(doc, "r.yaml")
    assert "180 matches across the rules: the total must be at most 128" in str(error.value)
    twice = ROUTE.format(rule="name: a", version="v1") + "  - name: a\n"
    with pytest.raises(ConfigError) as error:
        load_text(twice, "r.yaml")
    assert "spec.rules[1].name: rule name 'a' is not unique (see [0])" in str(error.value)
