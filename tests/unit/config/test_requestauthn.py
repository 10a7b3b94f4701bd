"""RequestAuthentication loads through the strict schema: good specs typed, bad ones refused."""

from __future__ import annotations

import pytest

from ambient.config import ConfigError, load_text
from ambient.config.requestauthn import RequestAuthentication
from tests.unit.waypoint.policy.helpers import ec_key, jwks_json

HEAD = """apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: orders-jwt, namespace: shop}
spec:
"""


def test_seed_example_loads_typed() -> None:
    text = (
        HEAD
        + """  targetRefs:
  - kind: Service
    group: ""
    name: orders
  jwtRules:
  - issuer: "https://accounts.example.com"
    jwksUri: "https://accounts.example.com/.well-known/jwks.json"
    audiences: [orders]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    timeout: 500ms
"""
    )
    (obj,) = list(load_text(text, "ra.yaml"))
    assert isinstance(obj, RequestAuthentication)
    rule = obj.spec.jwt_rules[0]
    assert obj.spec.refs[0].name == "orders"
    assert rule.audiences == ("orders",) and rule.timeout == 0.5
    assert rule.from_headers[0].prefix == "Bearer " and rule.forward_original_token


def test_inline_jwks_loads() -> None:
    jwks = jwks_json(ec_key())
    text = HEAD + f"  jwtRules:\n  - issuer: x\n    jwks: '{jwks}'\n"
    (obj,) = list(load_text(text, "ra.yaml"))
    assert isinstance(obj, RequestAuthentication)


@pytest.mark.parametrize(
    ("spec", "where", "problem"),
    [
        (
            "  jwtRules:\n  - audiences: [a]\n",
            "spec.jwtRules[0].issuer",
            "issuer or jwksUri must be set",
        ),
        (
            "  jwtRules:\n  - issuer: x\n    jwksUri: ftp://x/j\n",
            "spec.jwtRules[0].jwksUri",
            "http:// or https://",
        ),
        ("  jwtRules:\n  - issuer: x\n    jwks: '{}'\n", "spec.jwtRules[0].jwks", '"keys" list'),
        ("  jwtRules:\n  - issuer: x\n    jwks: 'nope'\n", "spec.jwtRules[0].jwks", "not JSON"),
        (
            "  jwtRules:\n  - issuer: x\n    audiences: ['']\n",
            "spec.jwtRules[0].audiences[0]",
            "must not be empty",
        ),
        (
            "  jwtRules:\n  - issuer: x\n    fromHeaders: [{prefix: a}]\n",
            "spec.jwtRules[0].fromHeaders[0].name",
            "missing required field",
        ),
        (
            "  jwtRules:\n  - issuer: x\n    fromHeaders: [{name: 'a b'}]\n",
            "spec.jwtRules[0].fromHeaders[0].name",
            "invalid HTTP header name",
        ),
        (
            "  jwtRules:\n  - issuer: x\n    fromParams: ['']\n",
            "spec.jwtRules[0].fromParams[0]",
            "must not be empty",
        ),
        ("  jwtRules:\n  - issuer: x\n    timeout: 5\n", "spec.jwtRules[0].timeout", "duration"),
        (
            "  jwtRules:\n  - issuer: x\n    forwardOriginalToken: 'yes'\n",
            "spec.jwtRules[0].forwardOriginalToken",
            "boolean",
        ),
        (
            "  jwtRules:\n  - issuer: x\n    jwks_uri: y\n",
            "spec.jwtRules[0].jwks_uri",
            "unknown field",
        ),
        (
            "  jwtRules:\n  - issuer: x\n    outputClaimToHeaders: [{header: x-a}]\n",
            "spec.jwtRules[0].outputClaimToHeaders[0].claim",
            "missing required field",
        ),
        (
            "  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, name: a}]\n",
            "spec.targetRefs",
            "only one of selector or targetRefs",
        ),
        ("  targetRefs: [{kind: Service}]\n", "spec.targetRefs[0].name", "missing required field"),
    ],
)
def test_bad_specs_refused_with_field_path(spec: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(HEAD + spec, "ra.yaml")
    text = str(err.value)
    assert f"ra.yaml:1: RequestAuthentication/orders-jwt: {where}: " in text, text
    assert problem in text
