"""Authorization policy: Istio AuthorizationPolicy / PeerAuthentication semantics as pure functions.

The L4 core ztunnel enforces:

- ``translate``: AuthorizationPolicy -> ``model.Authorization`` (the workload-API xDS
  form), with strict validation (``PolicyError``) and warnings;
- ``peerauth``: PeerAuthentication validation and per-port mTLS modes;
- ``store``: policies indexed as ztunnel finds them, compiled per workload;
- ``evaluate``: ``decide(store, workload, connection) -> Decision``;
- ``reference``: the same semantics, naive, as a test oracle and benchmark baseline.
"""

from ambient.authz.conn import Connection, Decision, Workload
from ambient.authz.evaluate import decide
from ambient.authz.model import Action, Authorization, Scope
from ambient.authz.peerauth import (
    Mode,
    PeerAuthentication,
    mtls_mode_for,
    plaintext_allowed,
    translate_peer_authentication,
)
from ambient.authz.store import PolicyStore
from ambient.authz.translate import PolicyError, TranslationResult, translate_authorization_policy

__all__ = [
    "Action",
    "Authorization",
    "Connection",
    "Decision",
    "Mode",
    "PeerAuthentication",
    "PolicyError",
    "PolicyStore",
    "Scope",
    "TranslationResult",
    "Workload",
    "decide",
    "mtls_mode_for",
    "plaintext_allowed",
    "translate_authorization_policy",
    "translate_peer_authentication",
]
