"""AuthorizationPolicy -> Authorization: the xDS shape istiod produces for ztunnel."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pytest
import yaml

from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    Match,
    MatchKind,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
)
from ambient.authz.translate import TranslationResult, translate_authorization_policy


def tr(spec: Mapping[str, object], ns: str = "shop", **kw: object) -> TranslationResult:
    return translate_authorization_policy("p", ns, spec, **kw)  # type: ignore[arg-type]


def only(spec: Mapping[str, object], ns: str = "shop") -> Authorization:
    result = tr(spec, ns)
    assert result.policy is not None, result.warnings
    return result.policy


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


@pytest.mark.parametrize(
    ("spec", "ns", "scope"),
    [
        ({}, "istio-system", Scope.GLOBAL),
        ({}, "shop", Scope.NAMESPACE),
        ({"selector": {"matchLabels": {"app": "a"}}}, "shop", Scope.WORKLOAD_SELECTOR),
        ({"selector": {"matchLabels": {"app": "a"}}}, "istio-system", Scope.WORKLOAD_SELECTOR),
    ],
)
def test_scope(spec: dict[str, object], ns: str, scope: Scope) -> None:
    assert only(spec, ns).scope is scope


def test_root_namespace_is_configurable() -> None:
    result = translate_authorization_policy("p", "istio-config", {}, root_namespace="istio-config")
    assert result.policy is not None and result.policy.scope is Scope.GLOBAL
    assert only({}, "istio-config").scope is Scope.NAMESPACE


def test_named_patterns() -> None:
    assert only({}).groups == () and only({}).action is Action.ALLOW
    assert only({"rules": [{}]}).groups == (Group(),)
    assert only({"action": "DENY", "rules": [{}]}).groups == (Group(),)


def test_rule_becomes_group_of_to_from_and_when_clauses() -> None:
    spec = yaml.safe_load(
        """
        selector: {matchLabels: {app: orders}}
        rules:
        - from:
          - source: {principals: ["cluster.local/ns/shop/sa/web", "cluster.local/ns/shop/*"]}
          - source: {namespaces: ["*"], notIpBlocks: ["10.0.0.1"]}
          to:
          - operation: {ports: ["8080"], notPorts: ["9090"]}
          when:
          - {key: source.ip, values: ["10.0.0.0/8"], notValues: ["2001:db8::/32"]}
          - {key: destination.port, notValues: ["22"]}
        """
    )
    policy = only(spec)
    assert policy.selector == (("app", "orders"),)
    assert policy.groups == (
        Group(
            (
                Rules((Match(destination_ports=(8080,), not_destination_ports=(9090,)),)),
                Rules(
                    (
                        Match(
                            principals=(
                                StringMatch(MatchKind.EXACT, "cluster.local/ns/shop/sa/web"),
                                StringMatch(MatchKind.PREFIX, "cluster.local/ns/shop/"),
                            )
                        ),
                        Match(
                            namespaces=(StringMatch(MatchKind.PRESENCE),),
                            not_source_ips=(net("10.0.0.1/32"),),
                        ),
                    )
                ),
                Rules(
                    (
                        Match(
                            source_ips=(net("10.0.0.0/8"),),
                            not_source_ips=(net("2001:db8::/32"),),
                        ),
                    )
                ),
                Rules((Match(not_destination_ports=(22,)),)),
            )
        ),
    )


@pytest.mark.parametrize(
    ("pattern", "kind", "value"),
    [
        ("shop", MatchKind.EXACT, "shop"),
        ("sh*", MatchKind.PREFIX, "sh"),
        ("*op", MatchKind.SUFFIX, "op"),
        ("*", MatchKind.PRESENCE, ""),
    ],
)
def test_string_forms(pattern: str, kind: MatchKind, value: str) -> None:
    policy = only({"rules": [{"from": [{"source": {"notNamespaces": [pattern]}}]}]})
    assert policy.groups[0].rules[0].matches[0].not_namespaces == (StringMatch(kind, value),)
    assert str(StringMatch(kind, value)) == pattern


def test_service_accounts_default_to_the_policy_namespace() -> None:
    policy = only({"rules": [{"from": [{"source": {"serviceAccounts": ["web", "ops/admin"]}}]}]})
    assert policy.groups[0].rules[0].matches[0].service_accounts == (
        ServiceAccountMatch("shop", "web"),
        ServiceAccountMatch("ops", "admin"),
    )


def test_single_addresses_become_host_networks() -> None:
    policy = only({"rules": [{"from": [{"source": {"ipBlocks": ["10.1.2.3", "2001:db8::1"]}}]}]})
    assert policy.groups[0].rules[0].matches[0].source_ips == (
        net("10.1.2.3/32"),
        net("2001:db8::1/128"),
    )


def test_host_bits_are_masked_with_a_warning() -> None:
    result = tr({"rules": [{"from": [{"source": {"ipBlocks": ["10.1.2.3/16"]}}]}]})
    assert result.policy is not None
    assert result.policy.groups[0].rules[0].matches[0].source_ips == (net("10.1.0.0/16"),)
    assert any("host bits" in w and "10.1.0.0/16" in w for w in result.warnings)


def test_allow_rule_with_http_fields_is_dropped_with_warning() -> None:
    spec = {
        "rules": [
            {"to": [{"operation": {"methods": ["GET"], "ports": ["80"]}}]},
            {"from": [{"source": {"namespaces": ["shop"]}}]},
        ]
    }
    result = tr(spec)
    assert result.policy is not None
    assert result.policy.groups == (
        Group((Rules((Match(namespaces=(StringMatch.parse("shop"),)),)),)),
    )
    (warning,) = result.warnings
    assert "shop/p" in warning and "spec.rules[0].to[0].operation.methods" in warning
    assert "ALLOW" in warning


def test_allow_policy_whose_rules_all_drop_still_applies() -> None:
    result = tr({"rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]})
    assert result.policy is not None and result.policy.groups == ()
    assert "spec.rules[0].when[0] (key request.auth.claims[iss])" in result.warnings[0]


def test_deny_strips_http_fields_and_keeps_the_l4_remainder() -> None:
    spec = {
        "action": "DENY",
        "rules": [{"to": [{"operation": {"paths": ["/a"], "ports": ["80"]}}]}],
    }
    result = tr(spec)
    assert result.policy is not None
    assert result.policy.groups == (Group((Rules((Match(destination_ports=(80,)),)),)),)
    assert any("more restrictive" in w and "operation.paths" in w for w in result.warnings)


def test_deny_with_only_http_fields_keeps_an_empty_match_and_warns_no_effect() -> None:
    spec = {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}
    result = tr(spec)
    assert result.policy is not None
    assert result.policy.groups == (Group((Rules((Match(),)),)),)
    assert any("never matches" in w for w in result.warnings)
    assert any("will have no effect" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            {
                "targetRefs": [
                    {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w"}
                ]
            },
            "waypoint",
        ),
        ({"targetRef": {"kind": "Service", "name": "orders"}}, "waypoint"),
        ({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}, "CUSTOM"),
    ],
)
def test_policies_ztunnel_does_not_enforce(spec: dict[str, object], fragment: str) -> None:
    result = tr(spec)
    assert result.policy is None
    assert any(fragment in w and "shop/p" in w for w in result.warnings)


def test_audit_is_kept_locally_with_a_warning() -> None:
    result = tr({"action": "AUDIT", "rules": [{}]})
    assert result.policy is not None and result.policy.action is Action.AUDIT
    assert any("AUDIT" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("value", "dry_run"),
    [("true", True), ("True", True), ("1", True), ("false", False), ("", False)],
)
def test_dry_run_annotation(value: str, dry_run: bool) -> None:
    result = tr({"rules": [{}]}, annotations={"istio.io/dry-run": value})
    assert result.policy is not None and result.policy.dry_run is dry_run


def test_empty_selector_warns_and_selects_everything() -> None:
    result = tr({"selector": {}})
    assert result.policy is not None and result.policy.selector == ()
    assert result.policy.selects({"any": "thing"})
    assert any("without labels" in w for w in result.warnings)


def test_negative_only_identity_in_allow_warns_about_plaintext() -> None:
    result = tr({"rules": [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/a/sa/b"]}}]}]})
    assert any("plaintext" in w for w in result.warnings)


def test_trust_domains_are_not_enforceable_at_l4() -> None:
    result = tr({"rules": [{"from": [{"source": {"trustDomains": ["cluster.local"]}}]}]})
    assert result.policy is not None and result.policy.groups == ()
    assert any("trustDomains" in w for w in result.warnings)


def test_null_fields_count_as_absent() -> None:
    policy = only({"selector": None, "rules": [{"from": None, "to": None, "when": None}]})
    assert policy.scope is Scope.NAMESPACE and policy.groups == (Group(),)
