"""Which policies apply to which workload, the way istiod tells ztunnel over xDS.

istiod resolves selectors itself: a WORKLOAD_SELECTOR Authorization travels without
its labels, and each workload lists the ``namespace/name`` of the selector policies
that select it in ``Workload.authorization_policies`` (istio/istio
``pilot/pkg/serviceregistry/ambient/workloads.go`` ``buildWorkloadPolicies``).
ztunnel then enforces, for a destination workload, the GLOBAL policies, the NAMESPACE
policies of its namespace and the policies it lists (istio/ztunnel ``src/state.rs``
``assert_rbac``).

PeerAuthentication never reaches ztunnel either. istiod turns it into DENY policies
matching connections without a peer identity (``authorization.go``,
``policies.go``): the shared ``<root>/istio_converted_static_strict`` (sent whenever
any PeerAuthentication exists) and, for a workload PeerAuthentication whose port
exceptions differ from its effective mode, ``<ns>/converted_peer_authentication_<name>``.
A workload lists the one that gives its effective mode (``convertedSelectorPeerAuthentications``).

Here the same shapes and names are computed from ``ambient.authz.peerauth``'s
resolution (``resolve_mtls``), so a ztunnel enforcing the synthetic policies reaches
the verdicts of ``PolicyStore.effective_mtls``, including the one case where that
module deliberately enforces a port-level STRICT istiod leaves unenforced (its
docstring explains).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ambient.authz.conn import Workload as PolicyTarget
from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    Labels,
    Match,
    MatchKind,
    Rules,
    Scope,
    StringMatch,
)
from ambient.authz.peerauth import (
    STATIC_STRICT_POLICY_NAME,
    EffectiveMtls,
    Mode,
    PeerAuthentication,
    resolve_mtls,
)
from ambient.authz.store import PolicyStore

__all__ = [
    "BY_NAME_SELECTOR",
    "CONVERTED_PEER_AUTHENTICATION_PREFIX",
    "STATIC_STRICT_POLICY_NAME",
    "converted_peer_authentication",
    "is_peer_authentication_policy",
    "peer_authentication_to_authorizations",
    "policies_by_name",
    "static_strict_authorization",
    "workload_policy_keys",
]

CONVERTED_PEER_AUTHENTICATION_PREFIX = "converted_peer_authentication_"

# The selector of a WORKLOAD_SELECTOR policy that workloads attach by name only (every
# policy istiod sends, and the synthetic PeerAuthentication ones). The value is not a
# valid Kubernetes label value, so label-based selection (``Authorization.selects``)
# never picks such a policy.
BY_NAME_SELECTOR: Labels = (("xds.ambient.io/attached", "by name only"),)

_NO_PEER_IDENTITY = StringMatch(MatchKind.PRESENCE)


def is_peer_authentication_policy(name: str) -> bool:
    """Whether ``name`` is one of istiod's synthetic PeerAuthentication policies."""
    return name == STATIC_STRICT_POLICY_NAME or name.startswith(
        CONVERTED_PEER_AUTHENTICATION_PREFIX
    )


def static_strict_authorization(root_namespace: str) -> Authorization:
    """``<root>/istio_converted_static_strict``: deny connections without a peer identity."""
    rule = Rules((Match(not_principals=(_NO_PEER_IDENTITY,)),))
    return Authorization(
        STATIC_STRICT_POLICY_NAME,
        root_namespace,
        Scope.WORKLOAD_SELECTOR,
        Action.DENY,
        (Group((rule,)),),
        selector=BY_NAME_SELECTOR,
    )


def converted_peer_authentication(
    policy: PeerAuthentication, mtls: EffectiveMtls
) -> Authorization | None:
    """The DENY that enforces ``mtls`` (resolved for ``policy``) when it has port exceptions.

    STRICT with PERMISSIVE ports: one group, no identity AND not any excepted port.
    PERMISSIVE with STRICT ports: one group per port, no identity AND that port. Without
    exceptions None: the static policy (or nothing) already says it.
    """
    if not mtls.ports:
        return None
    if mtls.strict:
        strict = Rules((Match(not_principals=(_NO_PEER_IDENTITY,)),))
        exempt = [Rules((Match(not_destination_ports=(port,)),)) for port, _ in mtls.ports]
        # istiod's order: its own STRICT first, an inherited STRICT merged in last
        rules = [strict, *exempt] if policy.mode is Mode.STRICT else [*exempt, strict]
        groups: tuple[Group, ...] = (Group(tuple(rules)),)
    else:
        groups = tuple(
            Group(
                (Rules((Match(not_principals=(_NO_PEER_IDENTITY,), destination_ports=(port,)),)),)
            )
            for port, _ in mtls.ports
        )
    return Authorization(
        CONVERTED_PEER_AUTHENTICATION_PREFIX + policy.name,
        policy.namespace,
        Scope.WORKLOAD_SELECTOR,
        Action.DENY,
        groups,
        selector=BY_NAME_SELECTOR,
    )


def peer_authentication_to_authorizations(
    policies: Iterable[PeerAuthentication], root_namespace: str = "istio-system"
) -> tuple[Authorization, ...]:
    """The synthetic policies istiod would send for ``policies`` (sorted by key).

    The static STRICT policy whenever there is any PeerAuthentication, plus a converted
    policy for each workload PeerAuthentication (selector, not in the root namespace,
    port-level modes) whose ports differ from its effective mode under the mesh and
    namespace policies in force.
    """
    store = PolicyStore(root_namespace)
    for pa in policies:
        store.put_peer_authentication(pa)
    stored = sorted(store.peer_authentications(), key=lambda p: p.key)
    if not stored:
        return ()
    out = [static_strict_authorization(root_namespace)]
    for pa in stored:
        if pa.selector is None or pa.namespace == root_namespace or not pa.port_level:
            continue
        mesh, namespace, _ = store.peer_levels(pa.namespace, {})
        converted = converted_peer_authentication(
            pa, resolve_mtls(mesh, namespace, pa, root_namespace=root_namespace)
        )
        if converted is not None:
            out.append(converted)
    return tuple(sorted(out, key=lambda a: a.key))


def workload_policy_keys(
    store: PolicyStore, namespace: str, labels: Mapping[str, str]
) -> tuple[str, ...]:
    """``Workload.authorization_policies`` as istiod fills it for a workload.

    The WORKLOAD_SELECTOR policies of its namespace and of the root namespace whose
    selector its labels satisfy (sorted), then the synthetic PeerAuthentication policy
    that gives its effective mTLS mode, if any.
    """
    selected = sorted(
        p.key for p in store.applicable(namespace, labels) if p.scope is Scope.WORKLOAD_SELECTOR
    )
    mtls = store.effective_mtls(PolicyTarget(namespace, labels))
    return (*selected, *(() if mtls.policy is None else (mtls.policy,)))


def policies_by_name(
    namespace: str, names: Iterable[str], policies: Mapping[str, Authorization]
) -> list[Authorization]:
    """The policies ztunnel enforces for a workload of ``namespace`` listing ``names``.

    GLOBAL policies, NAMESPACE policies of ``namespace``, then the listed ones (by
    ``namespace/name``; names not in ``policies`` are skipped, as ztunnel skips a policy
    it has not received yet). Each policy appears once.
    """
    found: dict[str, Authorization] = {}
    for key, policy in policies.items():
        if policy.scope is Scope.GLOBAL or (
            policy.scope is Scope.NAMESPACE and policy.namespace == namespace
        ):
            found[key] = policy
    for name in names:
        listed = policies.get(name)
        if listed is not None:
            found.setdefault(name, listed)
    return list(found.values())
