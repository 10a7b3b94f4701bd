"""A ``PolicyStore`` for policies received over xDS, where workloads attach them by name.

Over Istio's wire a ztunnel never sees a selector or a PeerAuthentication: each
workload lists (``Workload.authorization_policies``) the selector policies that
apply to it and the synthetic DENY that gives its mTLS mode (``ambient.xds.policies``).
``ByNamePolicyStore`` enforces that, as ztunnel's ``assert_rbac`` does: GLOBAL
policies, NAMESPACE policies of the destination's namespace, and the listed ones.

Decisions are keyed by (namespace, labels), like ``PolicyStore``'s, and the listed
names are read from the workloads the proxy holds: every workload with that namespace
and those labels (istiod computes the list from exactly those). A listed synthetic
PeerAuthentication policy is turned back into the ``EffectiveMtls`` it enforces, so a
plaintext connection is refused with the same verdict and reason as in-process; a
policy of that name with another shape stays an ordinary DENY.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ambient.authz._compiled import CompiledPolicy, CompiledPolicySet
from ambient.authz.conn import Workload
from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    Labels,
    Match,
    MatchKind,
    Rules,
    StringMatch,
    labels_key,
)
from ambient.authz.peerauth import EffectiveMtls, PeerAuthentication, resolve_mtls
from ambient.authz.store import PolicyStore
from ambient.state.workload import Workload as ApiWorkload
from ambient.xds.policies import is_peer_authentication_policy, policies_by_name

__all__ = ["ByNamePolicyStore", "mtls_of_synthetic"]

_NO_PEER_IDENTITY = (StringMatch(MatchKind.PRESENCE),)
_STRICT = Rules((Match(not_principals=_NO_PEER_IDENTITY),))
_CACHE_LIMIT = 4096

_Key = tuple[str, Labels]


def _exempt(port: int) -> Rules:
    return Rules((Match(not_destination_ports=(port,)),))


def _strict_on(port: int) -> Group:
    return Group((Rules((Match(not_principals=_NO_PEER_IDENTITY, destination_ports=(port,)),)),))


def _first_port(rules: tuple[Rules, ...], field: str) -> int:
    """The first port of ``field`` in the first match of ``rules`` (0 when there is none)."""
    matches = rules[0].matches if rules else ()
    ports: tuple[int, ...] = getattr(matches[0], field) if matches else ()
    return ports[0] if ports else 0


def mtls_of_synthetic(policy: Authorization) -> EffectiveMtls | None:
    """The ``EffectiveMtls`` a synthetic PeerAuthentication DENY enforces, or None.

    Recognises the shapes ``ambient.xds.policies`` (and istiod) produce: STRICT (one
    group: no peer identity), STRICT with exempt ports (one group: no peer identity AND
    not port p AND ...) and PERMISSIVE with STRICT ports (one group per port: no peer
    identity on port p).
    """
    if policy.action is not Action.DENY or policy.dry_run or not policy.groups:
        return None
    first = policy.groups[0].rules
    if len(policy.groups) == 1 and first.count(_STRICT) == 1:
        others = [r for r in first if r != _STRICT]
        exempt = [_first_port((r,), "not_destination_ports") for r in others]
        if [_exempt(port) for port in exempt] != others:
            return None
        return EffectiveMtls(True, tuple((port, False) for port in exempt), policy.key)
    strict = [_first_port(g.rules, "destination_ports") for g in policy.groups]
    if [_strict_on(port) for port in strict] != list(policy.groups):
        return None
    return EffectiveMtls(False, tuple((port, True) for port in strict), policy.key)


class ByNamePolicyStore(PolicyStore):
    """Policies attached by name (see the module docstring).

    ``workloads`` returns the proxy's current workloads by uid; the store notices a
    new mapping (``ProxyState`` replaces it on every push) and re-reads the names.
    """

    def __init__(
        self,
        workloads: Callable[[], Mapping[str, ApiWorkload]],
        root_namespace: str = "istio-system",
    ) -> None:
        super().__init__(root_namespace)
        self._workloads = workloads
        self._seen: Mapping[str, ApiWorkload] | None = None
        self._names: dict[_Key, tuple[str, ...]] = {}
        self._policies: dict[str, Authorization] = {}
        self._attached: dict[tuple[_Key, tuple[str, ...]], CompiledPolicySet] = {}

    def names_for(self, namespace: str, labels: Mapping[str, str]) -> tuple[str, ...]:
        """The policy names listed by workloads with ``namespace`` and ``labels``."""
        current = self._workloads()
        if current is not self._seen:
            names: dict[_Key, dict[str, None]] = {}
            for workload in current.values():
                key = (workload.namespace, labels_key(workload.labels))
                listed = names.setdefault(key, {})
                listed.update(dict.fromkeys(workload.authorization_policies))
            self._names = {key: tuple(listed) for key, listed in names.items()}
            self._seen = current
        return self._names.get((namespace, labels_key(labels)), ())

    def put_authorization(self, policy: Authorization) -> None:
        super().put_authorization(policy)
        self._policies[policy.key] = policy
        self._attached.clear()

    def remove_authorization(self, namespace: str, name: str) -> None:
        super().remove_authorization(namespace, name)
        if self._policies.pop(f"{namespace}/{name}", None) is not None:
            self._attached.clear()

    def put_peer_authentication(self, policy: PeerAuthentication) -> None:
        super().put_peer_authentication(policy)
        self._attached.clear()

    def remove_peer_authentication(self, namespace: str, name: str) -> None:
        super().remove_peer_authentication(namespace, name)
        self._attached.clear()

    def applicable(self, namespace: str, labels: Mapping[str, str]) -> list[Authorization]:
        """GLOBAL, NAMESPACE and listed policies (synthetic PeerAuthentication ones included)."""
        return policies_by_name(namespace, self.names_for(namespace, labels), self._policies)

    def compiled_for(self, workload: Workload) -> CompiledPolicySet:
        """The compiled policy set of ``workload``, by the names its peers list (cached)."""
        names = self.names_for(workload.namespace, workload.labels)
        key = (workload.key, names)
        compiled = self._attached.get(key)
        if compiled is None:
            policies = self.applicable(workload.namespace, workload.labels)
            mtls: EffectiveMtls | None = None
            enforced = []
            for policy in policies:
                if mtls is None and is_peer_authentication_policy(policy.name):
                    mtls = mtls_of_synthetic(policy)
                    if mtls is not None:
                        continue
                enforced.append(CompiledPolicy(policy))
            if mtls is None:  # PeerAuthentications put here directly (none over xDS)
                levels = self.peer_levels(workload.namespace, workload.labels)
                mtls = resolve_mtls(*levels, root_namespace=self.root_namespace)
            compiled = CompiledPolicySet(enforced, mtls)
            if len(self._attached) >= _CACHE_LIMIT:
                self._attached.clear()
            self._attached[key] = compiled
        return compiled
