"""Shared builders for the authz tests (compact policies, workloads, connections)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ambient.authz.evaluate import Connection, Decision, Workload, decide
from ambient.authz.model import Authorization
from ambient.authz.peerauth import PeerAuthentication, translate_peer_authentication
from ambient.authz.reference import reference_decide
from ambient.authz.store import PolicyStore
from ambient.authz.translate import translate_authorization_policy

ROOT = "istio-system"
WEB = "cluster.local/ns/shop/sa/web"
ORDERS = Workload("shop", {"app": "orders", "version": "v1"})


@dataclass(frozen=True)
class AP:
    """An AuthorizationPolicy as written: namespace, name, spec, annotations."""

    namespace: str
    name: str
    spec: Mapping[str, object]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PA:
    """A PeerAuthentication as written; ``created`` orders ties."""

    namespace: str
    name: str
    spec: Mapping[str, object]
    created: float = 0.0


def conn(
    identity: str | None = WEB, src: str = "10.0.0.1", dst: str = "10.0.1.1", port: int = 8080
) -> Connection:
    """A connection; ``identity`` is given without the ``spiffe://`` prefix."""
    return Connection.of(None if identity is None else f"spiffe://{identity}", src, dst, port)


def authorization(policy: AP) -> Authorization:
    """Translate ``policy`` and insist ztunnel enforces it."""
    result = translate_authorization_policy(
        policy.name, policy.namespace, policy.spec, policy.annotations, root_namespace=ROOT
    )
    assert result.policy is not None, result.warnings
    return result.policy


def peer_authentication(policy: PA) -> PeerAuthentication:
    """Translate ``policy`` and insist it applies."""
    result = translate_peer_authentication(
        policy.name, policy.namespace, policy.spec, root_namespace=ROOT, created=policy.created
    )
    assert result.policy is not None, result.warnings
    return result.policy


def build_store(policies: Iterable[AP] = (), peers: Iterable[PA] = ()) -> PolicyStore:
    """A store holding the translated policies."""
    store = PolicyStore(ROOT)
    for policy in policies:
        store.put_authorization(authorization(policy))
    for peer in peers:
        store.put_peer_authentication(peer_authentication(peer))
    return store


def checked_decide(store: PolicyStore, workload: Workload, connection: Connection) -> Decision:
    """``decide``, asserting it agrees with the naive reference (twice: memo cold and warm)."""
    first = decide(store, workload, connection)
    again = decide(store, workload, connection)
    expected = reference_decide(
        list(store.authorizations()),
        list(store.peer_authentications()),
        workload,
        connection,
        root_namespace=store.root_namespace,
    )
    assert first == expected, (first, expected)
    assert again == expected
    return first
