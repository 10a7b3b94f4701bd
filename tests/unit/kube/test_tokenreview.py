"""What a TokenReview's status says about a token (``parse_review``), the unverified ``exp``
read after it, and the trusted node accounts' syntax."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ambient.kube.nodeauth import DEFAULT_TRUSTED_NODE_ACCOUNTS, trusted_node_accounts
from ambient.kube.tokenreview import ReviewedToken, TokenRejected, parse_review, token_expiry

USER = {
    "username": "system:serviceaccount:istio-system:ztunnel",
    "uid": "7f89",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:istio-system"],
    "extra": {
        "authentication.kubernetes.io/pod-name": ["ztunnel-abc"],
        "authentication.kubernetes.io/pod-uid": ["10b7"],
        "authentication.kubernetes.io/node-name": ["node-1"],
    },
}
GOOD = {"authenticated": True, "audiences": ["istio-ca"], "user": USER}


def test_a_pod_bound_ztunnel_token() -> None:
    assert parse_review(GOOD, "istio-ca") == ReviewedToken(
        "istio-system", "ztunnel", "ztunnel-abc", "10b7", "node-1"
    )


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def _user(**changes: Any) -> dict[str, Any]:
    return _with(user={**USER, **changes})


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (_with(error="invalid bearer token"), "rejected the token: invalid bearer token"),
        (_with(authenticated=False), "did not authenticate"),
        ({"user": USER, "audiences": ["istio-ca"]}, "did not authenticate"),
        (_with(audiences=[]), "did not confirm the audience 'istio-ca'"),
        ({"authenticated": True, "user": USER}, "did not confirm the audience"),
        (_with(audiences=["https://kubernetes.default.svc"]), "not meant for this CA"),
        (_with(user=None), "names no user"),
        (_user(groups=["system:authenticated"]), "not a service account's"),
        (_user(username="alice", groups=["system:serviceaccounts"]), "not a service account's"),
        (_user(username="system:serviceaccount:ns"), "not a service account's"),
        (_user(username="system:serviceaccount:ns::"), "not a service account's"),
        (_user(username="system:node:ns:x"), "not a service account's"),
    ],
)
def test_refused_reviews(status: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        parse_review(status, "istio-ca")


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"authentication.kubernetes.io/pod-name": "ztunnel-abc"},  # not a list
        {"authentication.kubernetes.io/pod-name": ["a", "b"]},  # not one
        {"authentication.kubernetes.io/pod-name": [""]},
        "not a mapping",
    ],
)
def test_an_unbound_or_odd_token_names_no_pod(extra: Any) -> None:
    reviewed = parse_review(_user(extra=extra), "istio-ca")
    assert reviewed.pod_name is None and reviewed.account == "istio-system/ztunnel"


def _jwt(payload: Any) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (_jwt({"exp": 1796655963}), 1796655963.0),
        (_jwt({"exp": 17.5}), 17.5),
        (_jwt({"iat": 1}), None),
        (_jwt({"exp": True}), None),
        (_jwt({"exp": "1796655963"}), None),
        (_jwt([1, 2]), None),
        ("eyJ.bm90IGpzb24.c2ln", None),
        ("a.b", None),
        ("a.%%%.c", None),
        ("eyJhbGciOiJSUzI1NiJ9." + base64.urlsafe_b64encode(b'{"exp": NaN}').decode() + ".x", None),
    ],
)
def test_token_expiry(token: str, expected: float | None) -> None:
    assert token_expiry(token) == expected


def test_trusted_node_accounts() -> None:
    assert trusted_node_accounts("") == DEFAULT_TRUSTED_NODE_ACCOUNTS
    assert trusted_node_accounts(" istio-system/ztunnel , kube-system/cni ,") == {
        ("istio-system", "ztunnel"),
        ("kube-system", "cni"),
    }
    for bad in ("ztunnel", "/ztunnel", "istio-system/", "a/b/c"):
        with pytest.raises(ValueError, match=r"CA_TRUSTED_NODE_ACCOUNTS: .* is not NAMESPACE/"):
            trusted_node_accounts(bad)


def test_trusted_node_accounts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CA_TRUSTED_NODE_ACCOUNTS", "mesh/node-proxy")
    assert trusted_node_accounts() == {("mesh", "node-proxy")}
    monkeypatch.delenv("CA_TRUSTED_NODE_ACCOUNTS")
    assert trusted_node_accounts() == DEFAULT_TRUSTED_NODE_ACCOUNTS
