"""A node's client of the control plane's certificate service (ztunnel's ``caclient.rs``).

:meth:`CaClient.issue` is a ``CertificateManager`` issuer. As Istio's ztunnel does, it
authenticates as the node, asks for another workload's identity with
``ImpersonatedIdentity``, and checks that the returned leaf names exactly that identity.
The node authenticates in one of two ways, by mode:

- node certificate (``CaClient(address, credentials)``; folder and node-join modes):
  mutual TLS; once past half-life the node certificate is renewed through the control
  plane before the next request (``on_node_renewed`` may persist it);
- service-account token (``CaClient.with_token(address, node, token_source, roots)``;
  cluster mode): TLS that authenticates the server only, and ``authorization: Bearer
  <token>`` on every call, the token asked of the ``TokenSource`` each time (so a
  renewed token is used at once), as Istio's ztunnel sends its projected token.

Server check: gRPC Python verifies the chain against ``roots`` (the node PKI root) and the
DNS name ``istiod.istio-system.svc`` (``grpc.ssl_target_name_override``). It can check
neither a URI SAN nor run a custom verifier, so the control plane's certificate carries
that DNS SAN beside its SPIFFE id. Under that root only it can: node certificates have no
DNS SAN (and lack serverAuth), workload certificates come from another root.

:func:`join_node` redeems a one-time join token over TLS that authenticates the server only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import grpc

from ambient.identity.certs import (
    CertificateError,
    load_pem_chain,
    spiffe_ids_in_certificate,
    utc_now,
)
from ambient.identity.node import CONTROL_PLANE_HOSTNAME, validate_node_name
from ambient.identity.nodecreds import NodeCredentials, generate_node_key_and_csr
from ambient.identity.spiffe import SpiffeId
from ambient.identity.tokensource import TokenError, TokenSource, bearer_metadata
from ambient.xds.ca_names import (
    CREATE_CERTIFICATE_METHOD,
    IMPERSONATED_IDENTITY,
    JOIN_METHOD,
    NODE_NAME,
    RENEW_METHOD,
)
from ambient.xds.proto.ca_pb2 import IstioCertificateRequest, IstioCertificateResponse

__all__ = ["DEFAULT_TIMEOUT", "CaClient", "CaClientError", "join_node"]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds per call


class CaClientError(CertificateError):
    """The control plane refused a request, could not be reached, or answered wrongly."""

    def __init__(self, message: str, code: Any = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code  # a grpc.StatusCode, or None if the answer itself was wrong
        self.details = details


class CaClient:
    """Gets workload certificates from the control plane as node ``credentials.node``."""

    def __init__(
        self,
        address: str,
        credentials: NodeCredentials | None,
        roots: bytes | None = None,
        *,
        token_source: TokenSource | None = None,
        node: str | None = None,
        ttl: timedelta | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        server_name: str = CONTROL_PLANE_HOSTNAME,
        on_node_renewed: Callable[[NodeCredentials], None] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Call ``address`` (host:port of the certificate port) trusting ``roots`` for the server.

        With ``credentials`` (mutual TLS), ``roots`` defaults to the credentials' own (the
        node PKI root). Without, ``token_source``, ``node`` and ``roots`` are required (see
        :meth:`with_token`). ``ttl`` is sent as ``validity_duration`` (None: the control
        plane's default).
        """
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if (credentials is None) == (token_source is None):
            raise ValueError("give node credentials or a token source, not both or neither")
        if credentials is not None:
            node = credentials.node
        elif node is None or not roots:
            raise ValueError("a CA client with a token needs the node's name and the roots")
        self._address = address
        self._credentials = credentials
        self._node = validate_node_name(node)
        self._token_source = token_source
        self._roots = roots
        self._ttl = ttl
        self._timeout = timeout
        self._server_name = server_name
        self._on_node_renewed = on_node_renewed
        self._clock = clock
        self._channel: Any = None
        self._renew_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def with_token(
        cls,
        address: str,
        node: str,
        token_source: TokenSource,
        roots: bytes,
        *,
        ttl: timedelta | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        server_name: str = CONTROL_PLANE_HOSTNAME,
    ) -> CaClient:
        """A client for node ``node`` that authenticates with ``token_source``'s tokens.

        ``roots`` (PEM) are what the control plane's server certificate must chain to (its
        node PKI root, ``node_ca_root`` in its ``controlplane.json``).
        """
        return cls(
            address,
            None,
            roots,
            token_source=token_source,
            node=node,
            ttl=ttl,
            timeout=timeout,
            server_name=server_name,
        )

    @property
    def address(self) -> str:
        return self._address

    @property
    def node(self) -> str:
        return self._node

    @property
    def credentials(self) -> NodeCredentials:
        """The node credentials in use (replaced on renewal); RuntimeError with a token."""
        if self._credentials is None:
            raise RuntimeError(f"the CA client of node {self._node} authenticates with a token")
        return self._credentials

    @property
    def token_source(self) -> TokenSource | None:
        """Where the tokens come from (None: node certificate mode)."""
        return self._token_source

    async def issue(self, identity: SpiffeId, csr_pem: bytes) -> tuple[bytes, bytes]:
        """``(chain_pem, roots_pem)`` for ``identity``; CaClientError if refused (an Issuer)."""
        await self._renew_node_if_due()
        request = _request(csr_pem, self._ttl)
        request.metadata.update({IMPERSONATED_IDENTITY: identity.uri})
        what = f"certificate for {identity} (node {self.node})"
        response = await self._call(CREATE_CERTIFICATE_METHOD, request, what)
        chain, roots = _split(response, what, self._address)
        names = spiffe_ids_in_certificate(load_pem_chain(chain, what)[0])
        if names != [identity.uri]:
            raise _wrong_answer(f"{what}: the control plane returned a certificate for {names}")
        return chain, roots

    async def renew_node(self, ttl: timedelta | None = None) -> NodeCredentials:
        """Renew the node certificate now (new key); returns and uses the new credentials."""
        async with self._renew_lock:
            return await self._renew(ttl)

    async def close(self) -> None:
        """Close the connection; further calls fail."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(None)

    async def __aenter__(self) -> CaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------------

    async def _renew_node_if_due(self) -> None:
        current = self._credentials
        if current is None or self._clock() < current.refresh_at():
            return
        async with self._renew_lock:
            if self._credentials is not current:
                return  # renewed meanwhile
            try:
                await self._renew(None)
            except CertificateError as err:
                now = self._clock()
                if current.is_expired(now):
                    raise CaClientError(
                        f"the node certificate of {current.node} expired at {current.not_after} "
                        f"and renewing it failed ({err}); join the node again with a new token"
                    ) from err
                _log.warning(
                    "renewing the node certificate of %s failed; using the current one "
                    "(valid until %s): %s",
                    current.node,
                    current.not_after,
                    err,
                )

    async def _renew(self, ttl: timedelta | None) -> NodeCredentials:
        if self._credentials is None:
            raise CaClientError(f"node {self._node} has no node certificate to renew")
        node = self.node
        key_pem, csr_pem = generate_node_key_and_csr()
        what = f"renewal of the node certificate of {node}"
        response = await self._call(RENEW_METHOD, _request(csr_pem, ttl), what)
        chain, roots = _split(response, what, self._address)
        try:
            fresh = NodeCredentials.from_pem(node, key_pem, chain, roots, now=self._clock())
        except CertificateError as err:
            raise _wrong_answer(f"{what}: {err}") from None
        old, self._channel = self._channel, None
        self._credentials = fresh
        _log.info("renewed the node certificate of %s, valid until %s", node, fresh.not_after)
        if old is not None:
            await old.close(self._timeout)  # in-flight calls may finish
        if self._on_node_renewed is not None:
            try:
                self._on_node_renewed(fresh)
            except Exception:
                _log.exception("on_node_renewed failed for node %s", node)
        return fresh

    async def _call(
        self, method: str, request: IstioCertificateRequest, what: str
    ) -> IstioCertificateResponse:
        if self._closed:
            raise CaClientError(f"{what}: the CA client is closed")
        metadata: tuple[tuple[str, str], ...] = ()
        if self._token_source is not None:
            try:
                metadata = bearer_metadata(await self._token_source.token())
            except TokenError as err:
                raise CaClientError(f"{what}: no token to authenticate with: {err}") from None
        if self._channel is None:
            if self._credentials is not None:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=self._roots or self._credentials.roots_pem,
                    private_key=self._credentials.private_key_pem,
                    certificate_chain=self._credentials.chain_pem,
                )
            else:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._roots)
            self._channel = grpc.aio.secure_channel(
                self._address, credentials, options=_options(self._server_name)
            )
        return await _unary(
            self._channel, method, request, what, self._address, self._timeout, metadata
        )


async def join_node(
    address: str,
    token: str,
    node: str,
    roots_pem: bytes,
    *,
    ttl: timedelta | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    server_name: str = CONTROL_PLANE_HOSTNAME,
) -> NodeCredentials:
    """Redeem ``token`` at ``address`` (the join port): ``node``'s new credentials.

    ``roots_pem`` is the node PKI root the server must chain to, known out of band (the
    control plane's ``<state_dir>/node-ca/root-cert.pem``).
    """
    validate_node_name(node)
    if not isinstance(token, str) or not all("!" <= c <= "~" for c in token):
        raise ValueError(f"the join token for node {node} is malformed: expected printable ASCII")
    key_pem, csr_pem = generate_node_key_and_csr()
    request = _request(csr_pem, ttl)
    request.metadata.update({NODE_NAME: node})
    what = f"joining node {node}"
    credentials = grpc.ssl_channel_credentials(root_certificates=roots_pem)
    async with grpc.aio.secure_channel(address, credentials, options=_options(server_name)) as ch:
        response = await _unary(
            ch,
            JOIN_METHOD,
            request,
            what,
            address,
            timeout,
            (("authorization", f"Bearer {token}"),),
        )
    chain, roots = _split(response, what, address)
    try:
        return NodeCredentials.from_pem(node, key_pem, chain, roots)
    except CertificateError as err:
        raise _wrong_answer(f"{what}: {err}") from None


# -- helpers --------------------------------------------------------------------------------


def _options(server_name: str) -> list[tuple[str, Any]]:
    return [
        ("grpc.ssl_target_name_override", server_name),
        ("grpc.default_authority", server_name),
        ("grpc.max_receive_message_length", 1024 * 1024),
    ]


def _request(csr_pem: bytes, ttl: timedelta | None) -> IstioCertificateRequest:
    seconds = 0 if ttl is None else max(1, int(ttl.total_seconds()))
    return IstioCertificateRequest(csr=csr_pem.decode("ascii"), validity_duration=seconds)


async def _unary(
    channel: Any,
    method: str,
    request: IstioCertificateRequest,
    what: str,
    address: str,
    timeout: float,
    metadata: tuple[tuple[str, str], ...] = (),
) -> IstioCertificateResponse:
    call = channel.unary_unary(
        method,
        request_serializer=IstioCertificateRequest.SerializeToString,
        response_deserializer=IstioCertificateResponse.FromString,
    )
    try:
        response: IstioCertificateResponse = await call(
            request, timeout=timeout, metadata=metadata or None
        )
    except grpc.aio.AioRpcError as err:
        code, details = err.code(), err.details() or ""
        message = f"{what} refused by control plane {address} ({code.name}): {details}"
        _log.warning("%s", message)
        raise CaClientError(message, code, details) from None
    return response


def _split(response: IstioCertificateResponse, what: str, address: str) -> tuple[bytes, bytes]:
    """``(chain, roots)`` of an istiod-style answer: the leaf, intermediates, then the roots."""
    entries = [e if e.endswith("\n") else e + "\n" for e in response.cert_chain]
    if len(entries) < 2:
        raise _wrong_answer(
            f"{what}: control plane {address} returned {len(entries)} PEM entries; expected "
            "the certificate, then the roots"
        )
    return "".join(entries[:-1]).encode(), entries[-1].encode()


def _wrong_answer(message: str) -> CaClientError:
    _log.warning("%s", message)
    return CaClientError(message)
