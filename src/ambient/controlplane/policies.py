"""AuthorizationPolicies and PeerAuthentications of the configuration, translated for ztunnel.

The specs were validated at load (``ambient.config.security``); here each is
translated into the form ztunnel enforces (``ambient.authz.model``). Policies
ztunnel does not enforce (``targetRefs``: a waypoint's; CUSTOM) are left out
with a note, and every translation warning (L7 fields at L4, DISABLE in
ambient, ...) is reported once, naming the policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ambient.authz.model import Authorization
from ambient.authz.peerauth import PeerAuthentication, translate_peer_authentication
from ambient.authz.translate import PolicyError, translate_authorization_policy
from ambient.config.configset import ConfigSet
from ambient.config.resources import GenericResource

log = logging.getLogger("ambient.controlplane")

ROOT_NAMESPACE = "istio-system"


@dataclass(frozen=True)
class Policies:
    """What ztunnels enforce, by ``namespace/name``."""

    authorizations: Mapping[str, Authorization] = field(default_factory=dict)
    peer_authentications: Mapping[str, PeerAuthentication] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


_Translated = tuple[Authorization | PeerAuthentication | None, tuple[str, ...]]
TranslationCache = dict[tuple[str, str, str], tuple[object, float, _Translated]]
"""(kind, namespace, name) -> (the object, its order, what it translated to)."""


def _translate_authorization(obj: GenericResource, root_namespace: str) -> _Translated:
    ns, name = obj.meta.namespace, obj.meta.name
    try:
        result = translate_authorization_policy(
            name, ns, _plain(obj.spec), dict(obj.meta.annotations), root_namespace=root_namespace
        )
    except PolicyError as exc:  # e.g. a bad istio.io/dry-run annotation
        return None, (f"AuthorizationPolicy {ns}/{name}: {exc}; not enforced",)
    if result.policy is None and ("targetRefs" in obj.spec or "targetRef" in obj.spec):
        return None, ()  # a waypoint's policy: nothing for ztunnel, nothing to warn about
    return result.policy, tuple(f"AuthorizationPolicy {w}" for w in result.warnings)


def _translate_peer(obj: GenericResource, root_namespace: str, order: float) -> _Translated:
    ns, name = obj.meta.namespace, obj.meta.name
    try:
        pa = translate_peer_authentication(
            name, ns, _plain(obj.spec), root_namespace=root_namespace, created=order
        )
    except PolicyError as exc:
        return None, (f"PeerAuthentication {ns}/{name}: {exc}; not enforced",)
    return pa.policy, tuple(f"PeerAuthentication {w}" for w in pa.warnings)


def build_policies(
    config: ConfigSet,
    root_namespace: str = ROOT_NAMESPACE,
    *,
    cache: TranslationCache | None = None,
    objects: Mapping[str, tuple[object, ...]] | None = None,
) -> Policies:
    """Translate every AuthorizationPolicy and PeerAuthentication of ``config``.

    ``cache`` (kept by the caller across builds) skips objects translated before;
    ``objects`` gives the two kinds' objects already sorted (else read from ``config``).
    """
    cache = {} if cache is None else cache
    authorizations: dict[str, Authorization] = {}
    peers: dict[str, PeerAuthentication] = {}
    warnings: list[str] = []

    def translated(obj: GenericResource, order: float) -> _Translated:
        key = (obj.kind, obj.meta.namespace, obj.meta.name)
        hit = cache.get(key)
        if hit is not None and hit[0] is obj and hit[1] == order:
            return hit[2]
        if obj.kind == "AuthorizationPolicy":
            result = _translate_authorization(obj, root_namespace)
        else:
            result = _translate_peer(obj, root_namespace, order)
        cache[key] = (obj, order, result)
        return result

    def of(kind: str) -> tuple[object, ...]:
        return objects.get(kind, ()) if objects is not None else config.by_kind(kind)

    for obj in of("AuthorizationPolicy"):
        assert isinstance(obj, GenericResource)
        policy, notes = translated(obj, 0.0)
        warnings += notes
        if isinstance(policy, Authorization):
            authorizations[policy.key] = policy
    for order, obj in enumerate(of("PeerAuthentication")):
        assert isinstance(obj, GenericResource)
        peer, notes = translated(obj, float(order))
        warnings += notes
        if isinstance(peer, PeerAuthentication):
            peers[peer.key] = peer
    return Policies(authorizations, peers, tuple(warnings))
