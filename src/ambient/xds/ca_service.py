"""The control plane's certificate service over gRPC: Istio's CreateCertificate, bound to nodes.

Who calls is decided by a ``CallerAuthenticator`` (``ambient.xds.callers``), picked by
mode: node certificates over mutual TLS (the folder and node-join modes, described
below), or Kubernetes service-account tokens over TLS that authenticates the server
only (the cluster mode: ``authorization: Bearer <token>``, ``KubeNodeAuth``; no join,
no node certificates to renew — those RPCs answer UNIMPLEMENTED).

One ``grpc.aio`` server, two ports (gRPC Python cannot make a client certificate optional:
without ``require_client_auth`` it never asks for one):

- ``address`` (Istio's 15012), mutual TLS. The caller must present a node certificate
  (TLS checks it against the node PKI root; :func:`authenticated_node` checks it again and
  reads the node name). ``IstioCertificateService/CreateCertificate`` signs for the identity
  in the request metadata's ``ImpersonatedIdentity`` (else the CSR's URI SAN) only if
  ``authorize(node, identity)`` passes (it may be a coroutine): a pod with that identity
  is scheduled on that node. ``validity_duration`` is honoured up to ``max_ttl`` (24 h). Refusals are
  PERMISSION_DENIED, naming node and identity, and a WARNING here; a caller that is not
  authenticated is UNAUTHENTICATED, one whose credential cannot be checked now
  (the API server is unreachable) UNAVAILABLE.
  ``ambient.node.v1.NodeService/Renew`` gives the caller's node a new node certificate.
  A node certificate is honoured only while the node is in the mesh (``members``:
  recorded at join and renewal, removed by ``ambient node revoke``); a revoked node's
  renewals and requests are refused (UNAUTHENTICATED).
- ``join_address`` (15013), TLS authenticating the server only.
  ``ambient.node.v1.NodeService/Join`` redeems a one-time join token sent as
  ``authorization: Bearer <token>``.

The node RPCs reuse Istio's request/response messages through generic handlers, so no new
``.proto``: ``csr``, ``validity_duration`` (up to ``node_ttl``, 30 days), metadata
``NodeName`` (Join: must be the token's node). Every response is as istiod's: ``cert_chain``
is the leaf, any intermediates, and last the whole trust bundle (the mesh roots for
workload certificates, the node PKI root for node certificates).

The server certificate is the control plane's own, from the node PKI (see
``ambient.identity.node``); it is reissued at half-life and new handshakes pick it up.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ambient.controlplane.source import NotAuthorized
from ambient.identity.ca import CertificateAuthority
from ambient.identity.callers import AuthUnavailable, Caller, Unauthenticated
from ambient.identity.certs import CertificateError, WorkloadCertificate, load_pem_chain
from ambient.identity.jointokens import JoinTokenError, JoinTokens
from ambient.identity.members import NodeMembers
from ambient.identity.node import (
    DEFAULT_NODE_TTL,
    DEFAULT_SERVER_TTL,
    NodeAuthority,
    validate_node_name,
)
from ambient.identity.spiffe import InvalidSpiffeId, SpiffeId
from ambient.xds.ca_names import (
    CA_SERVICE,
    CREATE_CERTIFICATE_METHOD,
    DEFAULT_JOIN_PORT,
    DEFAULT_PORT,
    IMPERSONATED_IDENTITY,
    JOIN_METHOD,
    NODE_NAME,
    NODE_SERVICE,
    RENEW_METHOD,
)
from ambient.xds.callers import (
    CallerAuthenticator,
    NodeCertificates,
    authenticated_node,
    bearer_token,
    node_claim_check,
)
from ambient.xds.proto.ca_pb2 import IstioCertificateRequest, IstioCertificateResponse

__all__ = [
    "CREATE_CERTIFICATE_METHOD",
    "DEFAULT_JOIN_PORT",
    "DEFAULT_PORT",
    "IMPERSONATED_IDENTITY",
    "JOIN_METHOD",
    "MAX_TTL",
    "NODE_NAME",
    "NODE_SERVICE",
    "RENEW_METHOD",
    "Authorizer",
    "CaServer",
    "CaService",
    "authenticated_node",
    "node_claim_check",
]

_log = logging.getLogger(__name__)

MAX_TTL = timedelta(hours=24)
MAX_MESSAGE_BYTES = 64 * 1024  # a CSR is ~1 KiB; the join port is open to anyone


@runtime_checkable
class Authorizer(Protocol):
    """What decides whether a node may hold an identity (``ControlPlane``, ``KubeNodeAuth``)."""

    def authorize(self, node: str, identity: SpiffeId) -> Awaitable[None] | None:
        """Raise ``NotAuthorized`` unless ``node`` may obtain a certificate for ``identity``."""
        ...


AuthorizeFunction = Callable[[str, SpiffeId], Awaitable[None] | None]


class CsrObserver(Protocol):
    """What counts certificate requests (``ambient.monitoring.metrics.ControlPlaneMetrics``)."""

    def csr_answered(self, refusal: str | None) -> None: ...


class _Refused(Exception):
    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class CaServer:
    """A running certificate service: its gRPC server and the ports it listens on."""

    server: Any
    port: int
    join_port: int | None

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening; in-flight calls get ``grace`` seconds (None: cancelled at once)."""
        await self.server.stop(grace)


class CaService:
    """Istio's certificate service with node-bound authorization, plus node join and renewal."""

    def __init__(
        self,
        authorizer: Authorizer | AuthorizeFunction,
        ca: CertificateAuthority,
        *,
        nodes: NodeAuthority,
        tokens: JoinTokens | None = None,
        members: NodeMembers | None = None,
        authenticator: CallerAuthenticator | None = None,
        default_ttl: timedelta = MAX_TTL,
        max_ttl: timedelta = MAX_TTL,
        node_ttl: timedelta = DEFAULT_NODE_TTL,
        server_ttl: timedelta = DEFAULT_SERVER_TTL,
    ) -> None:
        """Sign workload certificates with ``ca`` for nodes authenticated by ``nodes``.

        ``authorizer`` is a ``ControlPlane`` (or anything with ``authorize(node, identity)``)
        or such a function. Without ``tokens`` the Join RPC is refused. With ``members``
        (the control plane always has them), joins and renewals are recorded there and a
        node certificate is honoured only while recorded (``ambient node revoke``).
        ``authenticator`` says who calls (default: node certificates of ``nodes``); the
        node PKI still issues the control plane's server certificate either way.
        """
        if not timedelta(seconds=1) <= default_ttl <= max_ttl:
            raise ValueError(f"need 1 s <= default_ttl <= max_ttl, got {default_ttl}, {max_ttl}")
        if node_ttl < timedelta(seconds=1) or server_ttl < timedelta(seconds=1):
            raise ValueError("node_ttl and server_ttl must be at least 1 second")
        if nodes.trust_domain != ca.trust_domain:
            raise ValueError(
                f"node PKI trust domain {nodes.trust_domain!r} differs from the CA's "
                f"{ca.trust_domain!r}"
            )
        self._authorize: AuthorizeFunction = (
            authorizer.authorize if isinstance(authorizer, Authorizer) else authorizer
        )
        self._ca = ca
        self._nodes = nodes
        self._tokens = tokens
        self._members = members
        self._authenticator: CallerAuthenticator = authenticator or NodeCertificates(nodes, members)
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        self._node_ttl = node_ttl
        self._server_ttl = server_ttl
        self._server_lock = threading.Lock()
        self._server_cert = nodes.issue_server_certificate(server_ttl)
        self.observer: CsrObserver | None = None  # counts CreateCertificate outcomes

    @property
    def authenticator(self) -> CallerAuthenticator:
        """Who may call, and how they prove it (see ``ambient.xds.callers``)."""
        return self._authenticator

    # -- serving --------------------------------------------------------------------------

    def server_certificate(self) -> WorkloadCertificate:
        """The control plane's current server certificate, reissued once past half-life."""
        with self._server_lock:
            if self._nodes.now() >= self._server_cert.refresh_at():
                self._server_cert = self._nodes.issue_server_certificate(self._server_ttl)
                _log.info(
                    "reissued the control plane's server certificate, valid until %s",
                    self._server_cert.not_after,
                )
            return self._server_cert

    def server_credentials(self, *, mutual: bool) -> Any:
        """TLS credentials for a port: ``mutual`` requires a client certificate from the node PKI.

        The server certificate is checked at each handshake and replaced once reissued.
        """
        roots = self._nodes.roots_pem() if mutual else None
        lock = threading.Lock()
        served = [self.server_certificate()]

        def configuration(cert: WorkloadCertificate) -> Any:
            return grpc.ssl_server_certificate_configuration(
                [(cert.private_key_pem, cert.chain_pem)], root_certificates=roots
            )

        def fetch() -> Any:
            try:
                cert = self.server_certificate()
            except Exception:
                _log.exception("reissuing the server certificate failed; keeping the current one")
                return None
            with lock:
                if cert is served[0]:
                    return None
                served[0] = cert
            return configuration(cert)

        return grpc.dynamic_ssl_server_credentials(
            configuration(served[0]), fetch, require_client_authentication=mutual
        )

    def register(self, server: Any) -> None:
        """Add the certificate and node services to a ``grpc.aio`` server."""
        handlers = {
            CA_SERVICE: {"CreateCertificate": self.create_certificate},
            NODE_SERVICE: {"Join": self.join, "Renew": self.renew},
        }
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        name: grpc.unary_unary_rpc_method_handler(
                            function,
                            request_deserializer=IstioCertificateRequest.FromString,
                            response_serializer=IstioCertificateResponse.SerializeToString,
                        )
                        for name, function in methods.items()
                    },
                )
                for service, methods in handlers.items()
            )
        )

    async def start(self, address: str, *, join_address: str | None = None) -> CaServer:
        """Serve on ``address`` (mutual TLS if the authenticator asks for client certificates,
        else TLS) and, if given, joins on ``join_address``."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.register(server)
        mutual = self._authenticator.mutual_tls
        port = _bind(server, address, self.server_credentials(mutual=mutual))
        join_port = None
        if join_address is not None:
            join_port = _bind(server, join_address, self.server_credentials(mutual=False))
        await server.start()
        _log.info(
            "certificate service on %s, port %d (%s; callers: %s)%s",
            address,
            port,
            "mTLS" if mutual else "TLS",
            self._authenticator.describe(),
            f"; node joins on {join_address}, port {join_port}" if join_address else "",
        )
        return CaServer(server, port, join_port)

    # -- RPCs -----------------------------------------------------------------------------

    async def create_certificate(
        self, request: IstioCertificateRequest, context: Any
    ) -> IstioCertificateResponse:
        """Istio's CreateCertificate, for identities of pods on the caller's node."""
        return await _answer(
            "CreateCertificate", context, self._create(request, context), self.observer
        )

    async def join(
        self, request: IstioCertificateRequest, context: Any
    ) -> IstioCertificateResponse:
        """Redeem a join token: the token's node gets its node certificate."""
        return await _answer("Join", context, self._join(request, context))

    async def renew(
        self, request: IstioCertificateRequest, context: Any
    ) -> IstioCertificateResponse:
        """A new node certificate for the node that presented its current one."""
        return await _answer("Renew", context, self._renew(request, context))

    async def _create(
        self, request: IstioCertificateRequest, context: Any
    ) -> IstioCertificateResponse:
        caller = await self._caller(context)
        node = caller.node
        csr = _csr(request, f"node {node}")
        identity = _requested_identity(request, csr, node)
        ttl = _ttl(request.validity_duration, self._default_ttl, self._max_ttl, f"node {node}")
        try:
            verdict = self._authorize(node, identity)
            if inspect.isawaitable(verdict):
                await verdict
        except AuthUnavailable as err:
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot decide whether node {node} may obtain a certificate for {identity}: {err}",
            ) from None
        except NotAuthorized as err:
            reason = str(err)
            if node not in reason or identity.uri not in reason:
                reason = f"node {node} may not obtain a certificate for {identity}: {reason}"
            raise _Refused(grpc.StatusCode.PERMISSION_DENIED, reason) from None
        try:
            chain = self._ca.sign_csr(csr, identity, ttl)
        except CertificateError as err:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot sign the certificate for {identity} requested by node {node}: {err}",
            ) from None
        _log.info("issued a certificate for %s to %s (valid for %s)", identity, caller, ttl)
        return _response(chain, self._ca.roots_pem())

    async def _join(
        self, request: IstioCertificateRequest, context: Any
    ) -> IstioCertificateResponse:
        claimed = _claimed_node(request)
        who = f"node {claimed}" if claimed else "a node that did not give its name"
        if self._tokens is None:
            raise _Refused(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{who} may not join: this control plane has no join tokens configured",
            )
        try:
            token = bearer_token(context, "the join token")
        except Unauthenticated as err:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"{who} may not join: {err}") from None
        csr = _csr(request, who)
        ttl = _ttl(request.validity_duration, self._node_ttl, self._node_ttl, who)
        try:
            record = self._members.admit if self._members is not None else None
            node, chain = self._tokens.redeem(token, csr, node=claimed, ttl=ttl, record=record)
        except JoinTokenError as err:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"{who} may not join: {err}") from None
        except CertificateError as err:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{who} may not join: {err}") from None
        _log.info("node %s joined (node certificate valid for %s)", node, ttl)
        return _response(chain, self._nodes.roots_pem())

    async def _renew(
        self, request: IstioCertificateRequest, context: Any
    ) -> IstioCertificateResponse:
        if not isinstance(self._authenticator, NodeCertificates):
            raise _Refused(
                grpc.StatusCode.UNIMPLEMENTED,
                "this control plane has no node certificates to renew: nodes authenticate with "
                f"{self._authenticator.describe()}",
            )
        node = (await self._caller(context)).node
        csr = _csr(request, f"node {node}")
        ttl = _ttl(request.validity_duration, self._node_ttl, self._node_ttl, f"node {node}")
        try:
            chain = self._nodes.sign_node_csr(node, csr, ttl)
        except CertificateError as err:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot renew the node certificate of {node}: {err}",
            ) from None
        if self._members is not None:
            self._members.admit(node, chain)
        _log.info("renewed the node certificate of %s (valid for %s)", node, ttl)
        return _response(chain, self._nodes.roots_pem())

    async def _caller(self, context: Any) -> Caller:
        try:
            return await self._authenticator.authenticate(context)
        except Unauthenticated as err:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, str(err)) from None
        except NotAuthorized as err:
            raise _Refused(grpc.StatusCode.PERMISSION_DENIED, str(err)) from None
        except AuthUnavailable as err:
            raise _Refused(grpc.StatusCode.UNAVAILABLE, str(err)) from None


# -- helpers --------------------------------------------------------------------------------


async def _answer(
    method: str,
    context: Any,
    work: Awaitable[IstioCertificateResponse],
    observer: CsrObserver | None = None,
) -> IstioCertificateResponse:
    """Await ``work``; a refusal or failure aborts the call with a clear status (fails closed).
    ``observer`` is told the outcome (None: answered; else the status's name)."""
    try:
        answer = await work
        if observer is not None:
            observer.csr_answered(None)
        return answer
    except _Refused as refusal:
        code, message = refusal.code, refusal.message
        _log.warning("refused %s from %s (%s): %s", method, context.peer(), code.name, message)
    except Exception as err:
        code = grpc.StatusCode.INTERNAL
        message = f"the control plane failed to handle {method}: {type(err).__name__}"
        _log.exception("%s from %s failed", method, context.peer())
    if observer is not None:
        observer.csr_answered(code.name)
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _bind(server: Any, address: str, credentials: Any) -> int:
    try:
        port = int(server.add_secure_port(address, credentials))
    except RuntimeError as err:
        raise OSError(f"certificate service cannot listen on {address}: {err}") from None
    if port == 0:
        raise OSError(f"certificate service cannot listen on {address}")
    return port


def _csr(request: IstioCertificateRequest, who: str) -> bytes:
    try:
        return request.csr.encode("ascii")
    except UnicodeEncodeError:
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT, f"{who}: the CSR is not ASCII PEM"
        ) from None


def _string_metadata(request: IstioCertificateRequest, key: str, who: str) -> str | None:
    fields = request.metadata.fields
    if key not in fields:
        return None
    value = fields[key]
    if value.WhichOneof("kind") != "string_value":
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT, f"{who}: request metadata {key} must be a string"
        )
    return str(value.string_value)


def _requested_identity(request: IstioCertificateRequest, csr: bytes, node: str) -> SpiffeId:
    who = f"node {node}"
    text = _string_metadata(request, IMPERSONATED_IDENTITY, who)
    if text is None:
        uris = _csr_uris(csr, who)
        if len(uris) != 1:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{who} named no identity: set metadata {IMPERSONATED_IDENTITY} or one URI SAN "
                f"in the CSR (found {uris or 'none'})",
            )
        text = uris[0]
    try:
        return SpiffeId.parse(text)
    except InvalidSpiffeId as err:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{who} asked for {err}") from None


def _csr_uris(csr_pem: bytes, who: str) -> list[str]:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError as err:
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT, f"{who}: the CSR is not a valid PEM CSR ({err})"
        ) from None
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _claimed_node(request: IstioCertificateRequest) -> str | None:
    name = _string_metadata(request, NODE_NAME, "a joining node")
    if name is None:
        return None
    try:
        return validate_node_name(name)
    except ValueError as err:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None


def _ttl(seconds: int, default: timedelta, maximum: timedelta, who: str) -> timedelta:
    """The lifetime for ``validity_duration``: 0 is ``default``, more than ``maximum`` is capped."""
    if seconds < 0:
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{who}: validity_duration must not be negative, got {seconds}",
        )
    if seconds == 0:
        return default
    limit = int(maximum.total_seconds())
    return timedelta(seconds=seconds) if seconds <= limit else maximum


def _response(chain_pem: bytes, roots_pem: bytes) -> IstioCertificateResponse:
    entries: Sequence[bytes] = [
        c.public_bytes(serialization.Encoding.PEM)
        for c in load_pem_chain(chain_pem, "issued certificate")
    ]
    return IstioCertificateResponse(cert_chain=[e.decode() for e in (*entries, roots_pem)])
