"""The L4 verdict for one inbound connection, in Istio's order.

Order (istio/api AuthorizationPolicy reference, as ztunnel ``assert_rbac`` applies it):
CUSTOM (not supported by ztunnel) -> PeerAuthentication STRICT refuses plaintext (a
DENY in istiod's translation) -> any matching DENY denies -> no ALLOW policy applies:
allow -> any matching ALLOW allows -> deny. Dry-run and AUDIT policies are matched
and reported but never decide.
"""

from __future__ import annotations

from ambient.authz._compiled import MEMO_LIMIT, CompiledPolicySet
from ambient.authz.conn import (
    NO_ALLOW_MATCHED,
    NO_ALLOW_POLICY,
    Connection,
    Decision,
    Workload,
)
from ambient.authz.model import Action
from ambient.authz.store import PolicyStore

__all__ = ["Connection", "Decision", "Workload", "decide", "evaluate", "evaluate_uncached"]


def decide(store: PolicyStore, workload: Workload, conn: Connection) -> Decision:
    """Whether ``conn`` may reach ``workload`` under the policies in ``store``."""
    return evaluate(store.compiled_for(workload), conn)


def evaluate(compiled: CompiledPolicySet, conn: Connection) -> Decision:
    """``decide`` against an already compiled policy set (memoized per equivalence key)."""
    key = compiled.key(conn)
    verdict = compiled.memo.get(key)
    if verdict is None:
        verdict = evaluate_uncached(compiled, conn)
        if len(compiled.memo) >= MEMO_LIMIT:
            compiled.memo.clear()
        compiled.memo[key] = verdict
    return verdict


def evaluate_uncached(compiled: CompiledPolicySet, conn: Connection) -> Decision:
    """The verdict, computed from the indexes without the memo."""
    mtls = compiled.mtls
    strict = (
        conn.principal is None
        and mtls.policy is not None
        and mtls.strict_for(conn.destination_port)
    )
    if strict:
        verdict = compiled.strict_verdict
    else:
        verdict = compiled.deny.first(conn) or (
            NO_ALLOW_POLICY
            if not compiled.has_allow
            else compiled.allow.first(conn) or NO_ALLOW_MATCHED
        )
    if not compiled.audit and not compiled.dry_run:
        return verdict
    return _observe(compiled, conn, verdict)


def _observe(compiled: CompiledPolicySet, conn: Connection, verdict: Decision) -> Decision:
    """Add AUDIT and dry-run matches, and what dry-run policies would have decided."""
    audit = tuple([cp.policy.key for cp in compiled.audit if cp.matches(conn)])
    if not compiled.dry_run:
        if not audit:
            return verdict
        return _decision(compiled, verdict, audit, (), None)
    dry = [cp.policy for cp in compiled.dry_run if cp.matches(conn)]
    matched = verdict.policy is not None  # an enforced DENY/STRICT or ALLOW decided
    if (matched and not verdict.allowed) or any(p.action is Action.DENY for p in dry):
        would_allow = False
    elif compiled.has_allow or compiled.dry_run_has_allow:
        would_allow = (matched and verdict.allowed) or any(p.action is Action.ALLOW for p in dry)
    else:
        would_allow = True
    return _decision(compiled, verdict, audit, tuple([p.key for p in dry]), would_allow)


def _decision(
    compiled: CompiledPolicySet,
    verdict: Decision,
    audit: tuple[str, ...],
    dry: tuple[str, ...],
    would_allow: bool | None,
) -> Decision:
    """``verdict`` with observations, reusing equal Decisions (they are immutable)."""
    key = (verdict.allowed, verdict.policy, verdict.reason, audit, dry, would_allow)
    decision = compiled.observed.get(key)
    if decision is None:
        decision = Decision(*key)
        if len(compiled.observed) >= MEMO_LIMIT:
            compiled.observed.clear()
        compiled.observed[key] = decision
    return decision
