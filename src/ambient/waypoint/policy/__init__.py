"""The waypoint's security: L7 AuthorizationPolicy and RequestAuthentication (JWT).

- ``targets``: which policies attach to a waypoint (``targetRefs``);
- ``paths``: Istio's path normalization and ``{*}``/``{**}`` path templates;
- ``attributes``, ``matchers``, ``conditions``: request attributes and the
  matchers of every source, operation and ``when`` field;
- ``authorization``: ``compile_authorization_policy`` and ``WaypointAuthorizer``
  (a ``waypoint.model.RequestAuthorizer``);
- ``jwks``: JWKS fetched over HTTP(S), cached and refreshed, failing closed;
- ``jwt``: ``JwtAuthenticator`` (a ``waypoint.model.RequestAuthenticator``);
- ``gate``: ``admit``, the two in Envoy's order, as ``Forwarder.handle`` runs them.
"""

from ambient.waypoint.policy.authorization import (
    CompiledPolicy,
    L7Action,
    L7Policy,
    WaypointAuthorizer,
    compile_authorization_policy,
)
from ambient.waypoint.policy.jwks import JwksCache, JwksError, JwksSource, fetch_jwks
from ambient.waypoint.policy.jwt import JwtAuthenticator
from ambient.waypoint.policy.paths import PathNormalization, normalize_path
from ambient.waypoint.policy.targets import ServiceRef, WaypointRef

__all__ = [
    "CompiledPolicy",
    "JwksCache",
    "JwksError",
    "JwksSource",
    "JwtAuthenticator",
    "L7Action",
    "L7Policy",
    "PathNormalization",
    "ServiceRef",
    "WaypointAuthorizer",
    "WaypointRef",
    "compile_authorization_policy",
    "fetch_jwks",
    "normalize_path",
]
