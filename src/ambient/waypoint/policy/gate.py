"""The waypoint's security gate for one request: JWT first, then L7 authorization.

``admit`` runs the two in Envoy's filter order (``Forwarder.handle`` asks it for
every request, whatever its HTTP version) and answers either a refusal to send
at once or the request to go on with:

- a present but invalid token: ``401`` with Envoy's reason as the body and
  ``www-authenticate: Bearer realm="<scheme>://<authority><path>",
  error="invalid_token"`` (details ``jwt_authn_access_denied``);
- denied by policy: ``403`` with body ``RBAC: access denied`` (details
  ``rbac_access_denied_matched_policy[<policy>]``);
- otherwise: go on, with the headers after ``forwardOriginalToken`` /
  ``outputPayloadToHeader`` / ``outputClaimToHeaders`` (authorization already
  saw those headers, as Envoy's RBAC filter runs after ``jwt_authn``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ambient.waypoint.model import (
    AuthzVerdict,
    Downstream,
    Headers,
    RequestAuthenticator,
    RequestAuthorizer,
    RequestHead,
    RequestPrincipal,
    Target,
)

__all__ = ["DENIED_BODY", "Admission", "Refusal", "admit"]

DENIED_BODY = b"RBAC: access denied"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to a request the gate stops: status, body, extra headers, Envoy's details."""

    status: int
    body: bytes
    headers: Headers
    details: str


@dataclass(frozen=True, slots=True)
class Admission:
    """``refusal`` set: answer it and stop. Else go on with ``request`` (JWT headers applied)."""

    request: RequestHead
    refusal: Refusal | None = None
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
        challenge = (("www-authenticate", f'Bearer realm="{realm}", error="invalid_token"'),)
        refusal = Refusal(401, authn.failure.encode(), challenge, "jwt_authn_access_denied")
        return Admission(request, refusal)
    if authn.headers is not None:
        request = replace(request, headers=authn.headers)
    verdict = authorizer.check(target, downstream, request, authn.principal)
    if not verdict.allowed:
        details = f"rbac_access_denied_matched_policy[{verdict.policy or 'none'}]"
        return Admission(request, Refusal(403, DENIED_BODY, (), details), verdict=verdict)
    return Admission(request, None, authn.principal, verdict)
