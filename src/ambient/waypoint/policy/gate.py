"""The waypoint's security gate for one request: JWT first, then L7 authorization.

``admit`` runs the two in Envoy's filter order and answers either a response to
send at once or the request headers to forward:

- a present but invalid token: ``401`` with Envoy's reason as the body and
  ``www-authenticate: Bearer realm="<url>", error="invalid_token"``;
- denied by policy: ``403`` with body ``RBAC: access denied``;
- otherwise: go on, with the headers after ``forwardOriginalToken`` /
  ``outputPayloadToHeader`` / ``outputClaimToHeaders`` (authorization already
  saw those headers, as Envoy's RBAC filter runs after ``jwt_authn``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ambient.waypoint.model import (
    AuthzVerdict,
    DirectResponse,
    Downstream,
    Headers,
    RequestAuthenticator,
    RequestAuthorizer,
    RequestHead,
    RequestPrincipal,
    Target,
)
from ambient.waypoint.policy.authorization import DENIED_BODY

__all__ = ["Admission", "admit"]

_TEXT = ("content-type", "text/plain")


@dataclass(frozen=True, slots=True)
class Admission:
    """``response`` set: answer it and stop. Else forward with ``headers`` (None: unchanged)."""

    response: DirectResponse | None = None
    headers: Headers | None = None
    principal: RequestPrincipal | None = None
    verdict: AuthzVerdict | None = None


async def admit(
    authenticator: RequestAuthenticator,
    authorizer: RequestAuthorizer,
    target: Target,
    downstream: Downstream,
    request: RequestHead,
) -> Admission:
    """Authenticate, then authorize ``request`` (see the module docstring)."""
    authn = await authenticator.authenticate(target, request)
    if authn.failure is not None:
        realm = f"{request.scheme}://{request.authority}{request.path_only}"
        challenge = f'Bearer realm="{realm}", error="invalid_token"'
        response = DirectResponse(
            401, (_TEXT, ("www-authenticate", challenge)), authn.failure.encode()
        )
        return Admission(response)
    seen = request if authn.headers is None else replace(request, headers=authn.headers)
    verdict = authorizer.check(target, downstream, seen, authn.principal)
    if not verdict.allowed:
        return Admission(DirectResponse(403, (_TEXT,), DENIED_BODY), verdict=verdict)
    return Admission(None, authn.headers, authn.principal, verdict)
