"""The waypoint's security: L7 AuthorizationPolicy and RequestAuthentication (JWT).

- ``targets``: which policies attach to a waypoint (``targetRefs``);
- ``paths``: Istio's path normalization and ``{*}``/``{**}`` path templates;
- ``attributes``, ``matchers``, ``conditions``: request attributes and the
  matchers of every source, operation and ``when`` field;
- ``authorization``: ``compile_authorization_policy`` and ``WaypointAuthorizer``
  (a ``waypoint.model.RequestAuthorizer``);
- ``requestauthn``: the strict RequestAuthentication schema (importing this
  package registers it with ``ambient.config``, so import it before loading);
- ``jwks``: JWKS fetched over HTTP(S), cached and refreshed, failing closed;
- ``jwt``: ``JwtAuthenticator`` (a ``waypoint.model.RequestAuthenticator``).
"""

# ambient.config registers this package's RequestAuthentication schema as a built-in
# kind (config/kinds.py imports requestauthn): load it first so that importing this
# package on its own does not enter that cycle halfway.
import ambient.config  # noqa: F401  (import order, see above)
from ambient.waypoint.policy.authorization import (
    DENIED_BODY,
    CompiledPolicy,
    L7Action,
    L7Policy,
    WaypointAuthorizer,
    compile_authorization_policy,
)
from ambient.waypoint.policy.jwks import JwksCache, JwksError, JwksSource, fetch_jwks
from ambient.waypoint.policy.jwt import JwtAuthenticator
from ambient.waypoint.policy.paths import PathNormalization, normalize_path
from ambient.waypoint.policy.requestauthn import (
    REQUEST_AUTHENTICATION,
    JwtRule,
    RequestAuthentication,
)
from ambient.waypoint.policy.targets import ServiceRef, TargetRef, WaypointRef

__all__ = [
    "DENIED_BODY",
    "REQUEST_AUTHENTICATION",
    "CompiledPolicy",
    "JwksCache",
    "JwksError",
    "JwksSource",
    "JwtAuthenticator",
    "JwtRule",
    "L7Action",
    "L7Policy",
    "PathNormalization",
    "RequestAuthentication",
    "ServiceRef",
    "TargetRef",
    "WaypointAuthorizer",
    "WaypointRef",
    "compile_authorization_policy",
    "fetch_jwks",
    "normalize_path",
]
