"""A deliberately naive evaluator: the semantics, line by line, without any index.

Mirrors istio/ztunnel ``src/rbac.rs`` (``Authorization::matches``) and
``src/state.rs`` (``assert_rbac``). It scans every policy on every call: it is the
oracle the tests compare ``decide`` against and the baseline of ``bench/authz.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from ambient.authz.conn import (
    NO_ALLOW_MATCHED,
    NO_ALLOW_POLICY,
    Connection,
    Decision,
    Workload,
    policy_decision,
    strict_decision,
)
from ambient.authz.model import Action, Authorization, Group, Match, Rules, Scope, StringMatch
from ambient.authz.peerauth import PeerAuthentication, resolve_mtls

__all__ = ["authorization_matches", "match_matches", "policy_applies", "reference_decide"]

T = TypeVar("T")


def _any_string(matches: Sequence[StringMatch], value: str | None) -> bool:
    return value is not None and any(m.matches(value) for m in matches)


def _field(positive: Sequence[T], negative: Sequence[T], hit: Callable[[T], bool]) -> bool:
    """rbac.rs ``matches_internal``: any positive (if set) and no negative (if set)."""
    return (not positive or any(hit(v) for v in positive)) and not any(hit(v) for v in negative)


def match_matches(m: Match, c: Connection) -> bool:
    """Whether one Match matches; an empty Match never does."""
    if m.is_empty:
        return False
    sa = c.service_account
    return (
        _field(m.destination_ips, m.not_destination_ips, lambda n: c.destination_ip in n)
        and _field(m.source_ips, m.not_source_ips, lambda n: c.source_ip in n)
        and _field(m.destination_ports, m.not_destination_ports, lambda p: p == c.destination_port)
        and _field(
            m.service_accounts,
            m.not_service_accounts,
            lambda a: sa is not None and (a.namespace, a.service_account) == sa,
        )
        and _field(m.principals, m.not_principals, lambda s: _any_string([s], c.principal))
        and _field(m.namespaces, m.not_namespaces, lambda s: _any_string([s], c.source_namespace))
    )


def _rules_match(r: Rules, c: Connection) -> bool:
    return not r.matches or any(match_matches(m, c) for m in r.matches)


def _group_matches(g: Group, c: Connection) -> bool:
    return all(_rules_match(r, c) for r in g.rules)


def authorization_matches(policy: Authorization, c: Connection) -> bool:
    """Whether any group of ``policy`` matches (a policy without groups never does)."""
    return any(_group_matches(g, c) for g in policy.groups)


def policy_applies(policy: Authorization, workload: Workload, root_namespace: str) -> bool:
    """Whether ``policy`` is in scope for ``workload``."""
    if policy.scope is Scope.GLOBAL:
        return True
    if policy.scope is Scope.NAMESPACE:
        return policy.namespace == workload.namespace
    in_scope = policy.namespace in (workload.namespace, root_namespace)
    return in_scope and policy.selects(workload.labels)


def _peer_levels(
    peer_auths: Iterable[PeerAuthentication], workload: Workload, root: str
) -> tuple[PeerAuthentication | None, ...]:
    def oldest(found: list[PeerAuthentication]) -> PeerAuthentication | None:
        return sorted(found, key=lambda p: (p.created, p.name))[0] if found else None

    pas = list(peer_auths)
    ns = workload.namespace
    mesh = oldest([p for p in pas if p.namespace == root and p.selector is None])
    if ns == root:
        return mesh, None, None
    local = [p for p in pas if p.namespace == ns]
    wl = oldest([p for p in local if p.selector is not None and p.selects(workload.labels)])
    return mesh, oldest([p for p in local if p.selector is None]), wl


def reference_decide(
    policies: Iterable[Authorization],
    peer_auths: Iterable[PeerAuthentication],
    workload: Workload,
    conn: Connection,
    *,
    root_namespace: str = "istio-system",
) -> Decision:
    """The decision, computed by scanning everything (slow on purpose)."""
    applicable = sorted(
        (p for p in policies if policy_applies(p, workload, root_namespace)), key=lambda p: p.key
    )
    mesh, ns, wl = _peer_levels(peer_auths, workload, root_namespace)
    mtls = resolve_mtls(mesh, ns, wl, root_namespace=root_namespace)
    port = conn.destination_port
    strict = conn.source_identity is None and mtls.strict_for(port)
    enforced = [p for p in applicable if p.action is not Action.AUDIT and not p.dry_run]
    dry = [p for p in applicable if p.action is not Action.AUDIT and p.dry_run]
    deny = next(
        (p for p in enforced if p.action is Action.DENY and authorization_matches(p, conn)), None
    )
    allows = [p for p in enforced if p.action is Action.ALLOW]
    allow = next((p for p in allows if authorization_matches(p, conn)), None)
    if strict:
        verdict = strict_decision(mtls.policy)
    elif deny is not None:
        verdict = policy_decision(deny)
    elif not allows:
        verdict = NO_ALLOW_POLICY
    else:
        verdict = NO_ALLOW_MATCHED if allow is None else policy_decision(allow)
    dry_hits = [p for p in dry if authorization_matches(p, conn)]
    would_allow = None
    if dry:
        if strict or deny or any(p.action is Action.DENY for p in dry_hits):
            would_allow = False
        elif not allows and not any(p.action is Action.ALLOW for p in dry):
            would_allow = True
        else:
            would_allow = allow is not None or any(p.action is Action.ALLOW for p in dry_hits)
    audit = tuple(
        p.key for p in applicable if p.action is Action.AUDIT and authorization_matches(p, conn)
    )
    return Decision(
        verdict.allowed,
        verdict.policy,
        verdict.reason,
        audit,
        tuple(p.key for p in dry_hits),
        would_allow,
    )
