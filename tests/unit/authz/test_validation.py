"""Invalid AuthorizationPolicies are refused with the field path and a clear message.

Checks follow Istio's admission validation (istio/istio ``pkg/config/validation``:
``ValidateAuthorizationPolicy``, ``pkg/config/security``), stricter where the brief
asks (unknown fields at every level, principal shape, ports 1..65535).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ambient.authz.translate import PolicyError, translate_authorization_policy


@dataclass(frozen=True)
class Bad:
    id: str
    spec: object
    path: str
    fragment: str
    annotations: dict[str, object] = field(default_factory=dict)
    name: str = "p"


def source(**fields: object) -> dict[str, object]:
    return {"rules": [{"from": [{"source": fields}]}]}


def operation(**fields: object) -> dict[str, object]:
    return {"rules": [{"to": [{"operation": fields}]}]}


def condition(**fields: object) -> dict[str, object]:
    return {"rules": [{"when": [fields]}]}


S = "spec.rules[0].from[0].source"
OP = "spec.rules[0].to[0].operation"
W = "spec.rules[0].when[0]"
# fmt: off
BAD: list[Bad] = [
    Bad("spec-not-mapping", ["rules"], "spec", "expected a mapping"),
    Bad("unknown-top-field", {"rule": []}, "spec.rule", "unknown field 'rule'"),
    Bad("unknown-rule-field", {"rules": [{"form": []}]}, "spec.rules[0].form", "unknown field"),
    Bad("unknown-source-field", source(principal=["a"]), f"{S}.principal", "unknown field"),
    Bad("unknown-operation-field", operation(port=["80"]), f"{OP}.port", "unknown field"),
    Bad("unknown-condition-field", condition(key="source.ip", value=["1.1.1.1"]), f"{W}.value", "unknown field"),
    Bad("unknown-from-field", {"rules": [{"from": [{"src": {}}]}]}, "spec.rules[0].from[0].src", "unknown field"),
    Bad("unknown-selector-field", {"selector": {"labels": {}}}, "spec.selector.labels", "unknown field"),
    Bad("rules-not-list", {"rules": {"from": []}}, "spec.rules", "expected a list"),
    Bad("rule-null", {"rules": [None]}, "spec.rules[0]", "must not be null"),
    Bad("principals-string", source(principals="cluster.local/ns/a/sa/b"), f"{S}.principals", "expected a list"),
    Bad("principal-number", source(principals=[7]), f"{S}.principals[0]", "expected a string"),
    Bad("principal-empty", source(principals=[""]), f"{S}.principals[0]", "empty value"),
    Bad("principal-spiffe-prefix", source(principals=["spiffe://cluster.local/ns/a/sa/b"]), f"{S}.principals[0]", "spiffe://"),
    Bad("principal-shape", source(principals=["cluster.local/a/b"]), f"{S}.principals[0]", "<trust-domain>/ns/<namespace>/sa/<service-account>"),
    Bad("principal-middle-wildcard", source(principals=["cluster.local/*/sa/b"]), f"{S}.principals[0]", "wildcard"),
    Bad("principal-two-wildcards", source(notPrincipals=["*a*"]), f"{S}.notPrincipals[0]", "wildcard"),
    Bad("namespace-middle-wildcard", source(namespaces=["a*b"]), f"{S}.namespaces[0]", "wildcard"),
    Bad("ip-block-invalid", source(ipBlocks=["10.0.0.300"]), f"{S}.ipBlocks[0]", "invalid IP address or CIDR"),
    Bad("not-ip-block-prefix-too-long", source(notIpBlocks=["10.0.0.0/33"]), f"{S}.notIpBlocks[0]", "invalid IP"),
    Bad("ip-block-netmask-form", source(ipBlocks=["10.0.0.0/255.0.0.0"]), f"{S}.ipBlocks[0]", "prefix length"),
    Bad("remote-ip-block-invalid", source(remoteIpBlocks=["nope"]), f"{S}.remoteIpBlocks[0]", "invalid IP"),
    Bad("service-accounts-with-principals", source(serviceAccounts=["a/b"], principals=["*"]), S, "cannot set serviceAccounts"),
    Bad("service-account-wildcard", source(serviceAccounts=["shop/*"]), f"{S}.serviceAccounts[0]", "wildcards are not allowed"),
    Bad("service-account-too-many-slashes", source(serviceAccounts=["a/b/c"]), f"{S}.serviceAccounts[0]", "namespace/serviceAccount"),
    Bad("service-account-empty-namespace", source(notServiceAccounts=["/b"]), f"{S}.notServiceAccounts[0]", "namespace/serviceAccount"),
    Bad("trust-domain-slash", source(trustDomains=["a/b"]), f"{S}.trustDomains[0]", "must not contain '/'"),
    Bad("source-empty", source(), S, "must not be empty"),
    Bad("source-null", {"rules": [{"from": [{"source": None}]}]}, f"{S}", "is required"),
    Bad("from-empty-list", {"rules": [{"from": []}]}, "spec.rules[0].from", "must not be empty"),
    Bad("to-empty-list", {"rules": [{"to": []}]}, "spec.rules[0].to", "must not be empty"),
    Bad("operation-empty", operation(), OP, "must not be empty"),
    Bad("port-zero", operation(ports=["0"]), f"{OP}.ports[0]", "1..65535"),
    Bad("port-too-big", operation(notPorts=["65536"]), f"{OP}.notPorts[0]", "1..65535"),
    Bad("port-name", operation(ports=["http"]), f"{OP}.ports[0]", "invalid port"),
    Bad("port-integer", operation(ports=[8080]), f"{OP}.ports[0]", "expected a string"),
    Bad("method-empty", operation(methods=[""]), f"{OP}.methods[0]", "empty value"),
    Bad("when-key-missing", condition(values=["x"]), f"{W}.key", "is required"),
    Bad("when-no-values", condition(key="source.ip"), W, "at least one of values or notValues"),
    Bad("when-unknown-key", condition(key="source.user", values=["x"]), f"{W}.key", "unknown attribute"),
    Bad("when-destination-labels", condition(key="destination.labels[app]", values=["x"]), f"{W}.key", "selector"),
    Bad("when-bad-map-key", condition(key="request.headers", values=["x"]), f"{W}.key", "a[b]"),
    Bad("when-bad-port", condition(key="destination.port", values=["x"]), f"{W}.values[0]", "invalid port"),
    Bad("when-bad-ip", condition(key="source.ip", notValues=["1.2.3"]), f"{W}.notValues[0]", "invalid IP"),
    Bad("when-bad-principal", condition(key="source.principal", values=["spiffe://x"]), f"{W}.values[0]", "spiffe://"),
    Bad("action-lowercase", {"action": "allow"}, "spec.action", "invalid action 'allow'"),
    Bad("action-number", {"action": 1}, "spec.action", "expected a string"),
    Bad("action-empty", {"action": ""}, "spec.action", "invalid action ''"),
    Bad("deny-without-rules", {"action": "DENY"}, "spec.rules", "DENY policy without rules"),
    Bad("deny-with-empty-rules", {"action": "DENY", "rules": []}, "spec.rules", "DENY policy without rules"),
    Bad("provider-without-custom", {"provider": {"name": "ext"}, "rules": [{}]}, "spec.provider", "only allowed with action CUSTOM"),
    Bad("custom-without-provider", {"action": "CUSTOM", "rules": [{}]}, "spec.provider.name", "must not be empty"),
    Bad("custom-without-rules", {"action": "CUSTOM", "provider": {"name": "ext"}}, "spec.rules", "never triggers"),
    Bad("selector-and-target-refs", {"selector": {"matchLabels": {"a": "b"}}, "targetRefs": [{"kind": "Gateway", "name": "w"}]}, "spec.selector", "only one of selector or targetRefs"),
    Bad("target-ref-and-target-refs", {"targetRef": {"kind": "Gateway", "name": "w"}, "targetRefs": [{"kind": "Gateway", "name": "w"}]}, "spec.targetRef", "only one of targetRef or targetRefs"),
    Bad("target-ref-without-name", {"targetRefs": [{"kind": "Service"}]}, "spec.targetRefs[0].name", "is required"),
    Bad("selector-wildcard", {"selector": {"matchLabels": {"app": "web*"}}}, "spec.selector.matchLabels[app]", "wildcards"),
    Bad("selector-value-type", {"selector": {"matchLabels": {"app": 1}}}, "spec.selector.matchLabels[app]", "must be a string"),
    Bad("dry-run-not-boolean", {}, "metadata.annotations[istio.io/dry-run]", "invalid boolean 'yes'", {"istio.io/dry-run": "yes"}),
    Bad("dry-run-wrong-type", {}, "metadata.annotations[istio.io/dry-run]", "expected a string", {"istio.io/dry-run": True}),
    Bad("name-empty", {}, "metadata.name", "non-empty", name=""),
]
# fmt: on


def test_validation_table_is_large() -> None:
    assert len(BAD) >= 15
    assert len({bad.id for bad in BAD}) == len(BAD)


@pytest.mark.parametrize("bad", BAD, ids=[bad.id for bad in BAD])
def test_invalid_policy_is_refused(bad: Bad) -> None:
    with pytest.raises(PolicyError) as caught:
        translate_authorization_policy(bad.name, "shop", bad.spec, bad.annotations)  # type: ignore[arg-type]
    assert caught.value.path == bad.path, caught.value
    assert bad.fragment in caught.value.message, caught.value
    assert str(caught.value) == f"{bad.path}: {caught.value.message}"
