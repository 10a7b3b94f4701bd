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


def build_policies(config: ConfigSet, root_namespace: str = ROOT_NAMESPACE) -> Policies:
    """Translate every AuthorizationPolicy and PeerAuthentication of ``config``."""
    authorizations: dict[str, Authorization] = {}
    peers: dict[str, PeerAuthentication] = {}
    warnings: list[str] = []
    for obj in config.by_kind("AuthorizationPolicy"):
        assert isinstance(obj, GenericResource)
        ns, name = obj.meta.namespace, obj.meta.name
        try:
            result = translate_authorization_policy(
                name,
                ns,
                _plain(obj.spec),
                dict(obj.meta.annotations),
                root_namespace=root_namespace,
            )
        except PolicyError as exc:  # e.g. a bad istio.io/dry-run annotation
            warnings.append(f"AuthorizationPolicy {ns}/{name}: {exc}; not enforced")
            continue
        if result.policy is None and ("targetRefs" in obj.spec or "targetRef" in obj.spec):
            continue  # a waypoint's policy: nothing for ztunnel, nothing to warn about
        warnings += [f"AuthorizationPolicy {w}" for w in result.warnings]
        if result.policy is not None:
            authorizations[result.policy.key] = result.policy
    for order, obj in enumerate(config.by_kind("PeerAuthentication")):
        assert isinstance(obj, GenericResource)
        ns, name = obj.meta.namespace, obj.meta.name
        try:
            pa = translate_peer_authentication(
                name, ns, _plain(obj.spec), root_namespace=root_namespace, created=float(order)
            )
        except PolicyError as exc:
            warnings.append(f"PeerAuthentication {ns}/{name}: {exc}; not enforced")
            continue
        warnings += [f"PeerAuthentication {w}" for w in pa.warnings]
        if pa.policy is not None:
            peers[pa.policy.key] = pa.policy
    return Policies(authorizations, peers, tuple(warnings))
