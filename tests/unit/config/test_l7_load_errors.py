"""Bad HTTPRoute / VirtualService / DestinationRule documents: one clear line each, with the field path."""

from __future__ import annotations

import pytest

from ambient.config import ConfigError, load_text

HTTPROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: bad, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: orders}}]
  rules:
  - {rule}
"""
VS = """apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: bad, namespace: shop}}
spec:
  hosts: [orders]
  http:
  - {rule}
"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: bad, namespace: shop}}
spec:
  host: orders
  {rest}
"""


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            HTTPROUTE.format(rule="matches: [{path: {type: Prefix, value: /}}]"),
            "HTTPRoute/bad: spec.rules[0].matches[0].path.type: must be one of Exact, PathPrefix, RegularExpression, got 'Prefix'",
        ),
        (
            HTTPROUTE.format(rule="matches: [{path: {type: PathPrefix, value: api}}]"),
            "spec.rules[0].matches[0].path.value: must be an absolute path starting with '/', got 'api'",
        ),
        (
            HTTPROUTE.format(
                rule='matches: [{path: {type: RegularExpression, value: "/(a)\\\\1"}}]'
            ),
            "spec.rules[0].matches[0].path.value: invalid regex '/(a)\\\\1': back-references (\\1) are not RE2 syntax",
        ),
        (
            HTTPROUTE.format(
                rule='matches: [{headers: [{name: x, type: RegularExpression, value: "(?=a)"}]}]'
            ),
            "spec.rules[0].matches[0].headers[0].value: invalid regex '(?=a)': look-ahead/look-behind assertions are not RE2 syntax",
        ),
        (
            HTTPROUTE.format(
                rule="matches: [{headers: [{name: X, value: a}, {name: x, value: b}]}]"
            ),
            "spec.rules[0].matches[0].headers[1].name: duplicate name 'x' (see [0])",
        ),
        (
            HTTPROUTE.format(rule="backendRefs: [{name: orders, port: 80, weight: 1000001}]"),
            "spec.rules[0].backendRefs[0].weight: must be between 0 and 1000000, got 1000001",
        ),
        (
            HTTPROUTE.format(rule="backendRefs: [{name: orders}]"),
            "spec.rules[0].backendRefs[0].port: required when referring to a Service",
        ),
        (
            HTTPROUTE.format(
                rule="filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]"
            ),
            "spec.rules[0].filters[0].requestRedirect.statusCode: must be one of 301, 302, 303, 307, 308, got 305",
        ),
        (
            HTTPROUTE.format(
                rule="filters: [{type: RequestRedirect, requestRedirect: {}}]\n    backendRefs: [{name: orders, port: 80}]"
            ),
            "spec.rules[0].backendRefs: must be empty when a RequestRedirect filter is used",
        ),
        (
            HTTPROUTE.format(rule="filters: [{type: URLRewrite}]"),
            "spec.rules[0].filters[0].urlRewrite: required when type is URLRewrite",
        ),
        (
            HTTPROUTE.format(
                rule="matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]"
            ),
            "spec.rules[0].filters[0]: ReplacePrefixMatch needs exactly one match, with a PathPrefix path",
        ),
        (
            HTTPROUTE.format(
                rule="filters: [{type: ExtensionRef, extensionRef: {group: x, kind: y, name: z}}]"
            ),
            "spec.rules[0].filters[0].type: not supported: the waypoint has no extension filters",
        ),
        (
            HTTPROUTE.format(rule="timeouts: {request: 10 seconds}"),
            "spec.rules[0].timeouts.request: expected a duration such as '10s', '500ms' or '1h30m', got '10 seconds'",
        ),
        (
            HTTPROUTE.format(rule="matchez: []"),
            "spec.rules[0].matchez: unknown field (did you mean 'matches'?)",
        ),
        (
            VS.format(
                rule="match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: orders}}]"
            ),
            "VirtualService/bad: spec.http[0].match[0].uri.prefix: set only one of exact, prefix, regex (also exact)",
        ),
        (
            VS.format(rule="redirect: {uri: /x}\n    route: [{destination: {host: orders}}]"),
            "spec.http[0].route: cannot be combined with redirect",
        ),
        (
            VS.format(
                rule="match: [{sourceLabels: {app: web}}]\n    route: [{destination: {host: orders}}]"
            ),
            "spec.http[0].match[0].sourceLabels: not supported: the waypoint routes without the caller's labels or namespace",
        ),
        (
            VS.format(
                rule="route: [{destination: {host: orders}}]\n    mirrorPercentage: {value: 150}"
            ),
            "spec.http[0].mirrorPercentage.value: expected a number between 0 and 100, got 150",
        ),
        (
            VS.format(
                rule='rewrite: {uriRegexRewrite: {match: "^/(a)", rewrite: "/\\\\2"}}\n    route: [{destination: {host: orders}}]'
            ),
            "spec.http[0].rewrite.uriRegexRewrite.rewrite: refers to group \\2 but the match has 1 group(s)",
        ),
        (
            VS.format(rule="timeout: 2 seconds\n    route: [{destination: {host: orders}}]"),
            "spec.http[0].timeout: expected a duration such as '2s', '0.5s' or '100ms', got '2 seconds'",
        ),
        (
            DR.format(rest="trafficPolicy: {loadBalancer: {simple: FASTEST}}"),
            "DestinationRule/bad: spec.trafficPolicy.loadBalancer.simple: must be one of UNSPECIFIED, ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM, PASSTHROUGH, got 'FASTEST'",
        ),
        (
            DR.format(rest="subsets: [{name: v1}, {name: v1}]"),
            "spec.subsets[1].name: duplicate name 'v1' (see spec.subsets[0])",
        ),
    ],
)
def test_bad_documents_are_refused_with_their_field_path(doc: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(doc, "routes.yaml")
    text = str(caught.value)
    assert "routes.yaml:1:" in text
    assert expected in text, text


def test_ignored_fields_load_with_warnings() -> None:
    config = load_text(
        VS.format(
            rule="fault: {abort: {httpStatus: 503}}\n    retries: {attempts: 3}\n    corsPolicy: {}\n    route: [{destination: {host: orders}}]"
        )
        + "---\n"
        + DR.format(
            rest="trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}"
        ),
        "routes.yaml",
    )
    warnings = sorted(f"{w.path}: {w.message}" for w in config.warnings)
    assert warnings == [
        "spec.http[0].corsPolicy: accepted but not applied: the waypoint does not answer CORS yet",
        "spec.http[0].fault.abort: no percentage: no request will be aborted (as in Istio)",
        "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: accepted but not applied: the waypoint speaks HTTP/1.1 to backends inside HBONE",
        "spec.trafficPolicy.tls: accepted but not applied: the waypoint always reaches backends over HBONE mutual TLS",
    ]


def test_strict_kinds_replace_generic_ones() -> None:
    from ambient.config.destinationrule import DestinationRule
    from ambient.config.httproute import HTTPRoute
    from ambient.config.virtualservice import VirtualService

    config = load_text(
        HTTPROUTE.format(rule="backendRefs: [{name: orders, port: 80}]")
        + "---\n"
        + VS.format(rule="route: [{destination: {host: orders}}]")
        + "---\n"
        + DR.format(rest="subsets: [{name: v1, labels: {version: v1}}]"),
        "routes.yaml",
    )
    kinds = {type(obj) for obj in config}
    assert kinds == {HTTPRoute, VirtualService, DestinationRule}
