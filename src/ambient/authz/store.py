"""Policies indexed the way ztunnel finds them, with a per-workload compiled cache.

A workload is subject to (istio/ztunnel ``src/state.rs`` ``assert_rbac``; istio/istio
``buildWorkloadPolicies``): GLOBAL policies (root namespace, no selector), NAMESPACE
policies of its namespace, and WORKLOAD_SELECTOR policies of its namespace or of the
root namespace whose labels are a subset of its labels. The applicable set is
compiled once per (namespace, labels) and cached until a policy that could affect it
changes; a decision never scans policies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ambient.authz._compiled import CompiledPolicy, CompiledPolicySet
from ambient.authz.conn import Workload
from ambient.authz.model import Authorization, Labels, Scope
from ambient.authz.peerauth import EffectiveMtls, PeerAuthentication, resolve_mtls

__all__ = ["PolicyStore"]

_Levels = tuple[PeerAuthentication | None, PeerAuthentication | None, PeerAuthentication | None]


def _oldest(candidates: list[PeerAuthentication]) -> PeerAuthentication | None:
    return min(candidates, key=lambda p: (p.created, p.name), default=None)


class PolicyStore:
    """Translated AuthorizationPolicies and PeerAuthentications of one mesh."""

    def __init__(self, root_namespace: str = "istio-system") -> None:
        self.root_namespace = root_namespace
        self._by_key: dict[str, Authorization] = {}
        self._global: dict[str, Authorization] = {}
        self._namespace: dict[str, dict[str, Authorization]] = {}
        self._selector: dict[str, dict[str, Authorization]] = {}
        self._peer: dict[str, dict[str, PeerAuthentication]] = {}
        self._cache: dict[tuple[str, Labels], CompiledPolicySet] = {}
        self._compiled: dict[str, CompiledPolicy] = {}
        # Counts the changes that can move a decision (memos of decisions key on it).
        self.revision = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def authorizations(self) -> Iterator[Authorization]:
        """Every stored Authorization."""
        return iter(self._by_key.values())

    def peer_authentications(self) -> Iterator[PeerAuthentication]:
        """Every stored PeerAuthentication."""
        return (pa for by_key in self._peer.values() for pa in by_key.values())

    def put_authorization(self, policy: Authorization) -> None:
        """Add or replace (by ``namespace/name``) a policy."""
        self.remove_authorization(policy.namespace, policy.name)
        self._by_key[policy.key] = policy
        if policy.scope is Scope.GLOBAL:
            self._global[policy.key] = policy
        elif policy.scope is Scope.NAMESPACE:
            self._namespace.setdefault(policy.namespace, {})[policy.key] = policy
        else:
            self._selector.setdefault(policy.namespace, {})[policy.key] = policy
        self._invalidate(policy.namespace, policy.scope is Scope.GLOBAL)

    def remove_authorization(self, namespace: str, name: str) -> None:
        """Forget a policy; unknown names are ignored."""
        policy = self._by_key.pop(f"{namespace}/{name}", None)
        if policy is None:
            return
        self._compiled.pop(policy.key, None)
        self._global.pop(policy.key, None)
        self._namespace.get(namespace, {}).pop(policy.key, None)
        self._selector.get(namespace, {}).pop(policy.key, None)
        self._invalidate(namespace, policy.scope is Scope.GLOBAL)

    def put_peer_authentication(self, policy: PeerAuthentication) -> None:
        """Add or replace (by ``namespace/name``) a PeerAuthentication."""
        self._peer.setdefault(policy.namespace, {})[policy.key] = policy
        self._invalidate(policy.namespace, False)

    def remove_peer_authentication(self, namespace: str, name: str) -> None:
        """Forget a PeerAuthentication; unknown names are ignored."""
        if self._peer.get(namespace, {}).pop(f"{namespace}/{name}", None) is not None:
            self._invalidate(namespace, False)

    def applicable(self, namespace: str, labels: Mapping[str, str]) -> list[Authorization]:
        """The Authorizations that apply to a workload (unordered)."""
        found = [*self._global.values(), *self._namespace.get(namespace, {}).values()]
        sources = {namespace, self.root_namespace}
        for ns in sources:
            found += [p for p in self._selector.get(ns, {}).values() if p.selects(labels)]
        return found

    def peer_levels(self, namespace: str, labels: Mapping[str, str]) -> _Levels:
        """The (mesh, namespace, workload) PeerAuthentications in effect for a workload."""
        root = self.root_namespace
        mesh = _oldest([p for p in self._peer.get(root, {}).values() if p.selector is None])
        if namespace == root:
            return mesh, None, None
        local = list(self._peer.get(namespace, {}).values())
        ns = _oldest([p for p in local if p.selector is None])
        wl = _oldest([p for p in local if p.selector is not None and p.selects(labels)])
        return mesh, ns, wl

    def compiled_for(self, workload: Workload) -> CompiledPolicySet:
        """The compiled policy set of ``workload`` (cached)."""
        compiled = self._cache.get(workload.key)
        if compiled is None:
            ns, labels = workload.namespace, workload.labels
            mtls = resolve_mtls(*self.peer_levels(ns, labels), root_namespace=self.root_namespace)
            compiled = CompiledPolicySet(
                [self._compile(p) for p in self.applicable(ns, labels)], mtls
            )
            self._cache[workload.key] = compiled
        return compiled

    def effective_mtls(self, workload: Workload) -> EffectiveMtls:
        """The resolved PeerAuthentication outcome for ``workload``."""
        return self.compiled_for(workload).mtls

    def _compile(self, policy: Authorization) -> CompiledPolicy:
        compiled = self._compiled.get(policy.key)
        if compiled is None:
            compiled = self._compiled[policy.key] = CompiledPolicy(policy)
        return compiled

    def _invalidate(self, namespace: str, mesh_wide: bool) -> None:
        self.revision += 1
        if mesh_wide or namespace == self.root_namespace:
            self._cache.clear()
        else:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != namespace}
