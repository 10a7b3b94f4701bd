"""How the control plane's gRPC services (CA and xDS) learn which node is calling.

A :class:`CallerAuthenticator` turns a call's context into a ``Caller`` (a node) or
refuses it; the CA (``CaService``) and xDS (``XdsServer(authorize_node=...)``, through
:func:`caller_claim_check`) take one. The control plane picks it by mode:

- :class:`NodeCertificates` — the folder and node-join modes: the caller presents its
  node certificate (mutual TLS; the port requires a client certificate), issued at
  join with a one-time token and renewed by presenting it; honoured only while the
  node is in the mesh (``NodeMembers``).
- :class:`BearerTokens` — the cluster mode: ``authorization: Bearer <token>`` in the
  call's metadata, over TLS that authenticates the server only; ``verify`` (e.g.
  ``KubeNodeAuth.verify``: TokenReview, trusted node account, bound pod) says which
  node the token speaks for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ambient.controlplane.source import NotAuthorized
from ambient.identity.callers import AuthUnavailable, Caller, Unauthenticated
from ambient.identity.jointokens import TokenStoreError
from ambient.identity.members import NodeMembers
from ambient.identity.node import NodeAuthority, NodeCredentialError
from ambient.identity.tokensource import MAX_TOKEN_BYTES

__all__ = [
    "BearerTokens",
    "CallerAuthenticator",
    "NodeCertificates",
    "authenticated_node",
    "bearer_token",
    "caller_claim_check",
    "node_claim_check",
]


class CallerAuthenticator(Protocol):
    """Says which node makes a call (see the module docstring)."""

    @property
    def mutual_tls(self) -> bool:
        """Whether callers present a client certificate (the port must ask for one)."""
        ...

    def describe(self) -> str:
        """How callers authenticate, for logs."""
        ...

    async def authenticate(self, context: Any) -> Caller:
        """The calling node; raises Unauthenticated, NotAuthorized or AuthUnavailable."""
        ...


def authenticated_node(
    context: Any, nodes: NodeAuthority, members: NodeMembers | None = None
) -> str:
    """The node whose certificate the caller of ``context`` presented; NodeCredentialError if none.

    For any servicer on the mutual-TLS port (e.g. xDS) that needs the caller's node.
    With ``members``, the certificate must also be one the node still holds in the mesh
    (not revoked: ``ambient.identity.members``).
    """
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        raise NodeCredentialError(
            "the caller presented no client certificate: join with a token on the join port, "
            "then call this port with the node certificate"
        )
    node = nodes.verify_node_certificate(bytes(pems[0]))
    if members is not None:
        members.check(node, bytes(pems[0]))
    return node


def node_claim_check(
    nodes: NodeAuthority, members: NodeMembers | None = None
) -> Callable[[Any, str], None]:
    """A check for ``XdsServer(authorize_node=...)``: a stream's claimed node must be its cert's
    (and, with ``members``, a node still in the mesh).

    Raises ``NotAuthorized`` naming the claimed node (and the certificate's, if any).
    """

    def check(context: Any, claimed: str) -> None:
        try:
            node = authenticated_node(context, nodes, members)
        except (NodeCredentialError, TokenStoreError) as err:
            raise NotAuthorized(f"node {claimed!r} may not open an xDS stream: {err}") from None
        if node != claimed:
            raise NotAuthorized(
                f"the xDS stream claims node {claimed!r}, but its client certificate is "
                f"for node {node!r}"
            )

    return check


class NodeCertificates:
    """Callers present a node certificate of ``nodes`` (folder and node-join modes)."""

    mutual_tls = True

    def __init__(self, nodes: NodeAuthority, members: NodeMembers | None = None) -> None:
        self.nodes = nodes
        self.members = members

    def describe(self) -> str:
        return "node certificates (mutual TLS)"

    async def authenticate(self, context: Any) -> Caller:
        try:
            return Caller(authenticated_node(context, self.nodes, self.members))
        except NodeCredentialError as err:
            raise Unauthenticated(str(err)) from None


def bearer_token(context: Any, expected: str) -> str:
    """The token of the call's ``authorization: Bearer`` metadata; Unauthenticated if none.

    ``expected`` names the token in the refusal (e.g. "the join token").
    """
    values = [m.value for m in context.invocation_metadata() or () if m.key == "authorization"]
    value = values[0] if len(values) == 1 else ""
    scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(f"send {expected} as 'authorization: Bearer <token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthenticated(f"{expected} is longer than {MAX_TOKEN_BYTES} bytes: not a token")
    return token


class BearerTokens:
    """Callers send a bearer token that ``verify`` maps to a node (the cluster mode)."""

    mutual_tls = False

    def __init__(self, verify: Callable[[str], Awaitable[Caller]], description: str) -> None:
        self.verify = verify
        self.description = description

    def describe(self) -> str:
        return self.description

    async def authenticate(self, context: Any) -> Caller:
        token = bearer_token(context, "the node's service-account token")
        return await self.verify(token)


def caller_claim_check(
    authenticator: CallerAuthenticator,
) -> Callable[[Any, str], Awaitable[None]]:
    """A check for ``XdsServer(authorize_node=...)``: the stream's claimed node must be the
    authenticated caller's. Unauthenticated and NotAuthorized name the claimed node."""

    async def check(context: Any, claimed: str) -> None:
        try:
            caller = await authenticator.authenticate(context)
        except Unauthenticated as err:
            raise Unauthenticated(f"node {claimed!r} may not open an xDS stream: {err}") from None
        except (NotAuthorized, AuthUnavailable) as err:
            raise NotAuthorized(f"node {claimed!r} may not open an xDS stream: {err}") from None
        if caller.node != claimed:
            raise NotAuthorized(
                f"the xDS stream claims node {claimed!r}, but it comes from {caller}"
            )

    return check
