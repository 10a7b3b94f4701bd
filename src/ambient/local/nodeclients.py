"""A node's clients of the control plane (xDS and certificates), authenticated by mode.

- Folder and node-join modes: the node certificate of ``ambient node join``
  (``NodeCredentials``), mutual TLS on both connections (:func:`node_xds_client`,
  ``CaClient(address, credentials)``).
- Cluster mode: a :class:`TokenAuth` — a ``TokenSource`` (the projected
  ``istio-token`` file, or a TokenRequest bound to the ztunnel's pod) and the roots
  the control plane's server certificate must chain to; TLS authenticates the
  server only and every call carries ``authorization: Bearer <token>``
  (:func:`token_xds_client`, ``CaClient.with_token``). The control plane takes the
  node from the token's pod, and an xDS stream may claim only that node.

Either way the control plane's certificate is checked against the DNS name
``istiod.istio-system.svc`` (gRPC Python checks DNS SANs only).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ambient.identity.node import CONTROL_PLANE_HOSTNAME
from ambient.identity.nodecreds import NodeCredentials
from ambient.identity.tokensource import (
    FileTokenSource,
    TokenError,
    TokenSource,
    bearer_metadata,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "ClusterIdentity",
    "TokenAuth",
    "channel_credentials",
    "node_xds_client",
    "token_xds_client",
]

CHANNEL_OPTIONS = (
    ("grpc.ssl_target_name_override", CONTROL_PLANE_HOSTNAME),
    ("grpc.default_authority", CONTROL_PLANE_HOSTNAME),
)


@dataclass(frozen=True)
class TokenAuth:
    """How a ztunnel in a cluster authenticates: its tokens, and the server's roots (PEM)."""

    source: TokenSource
    roots_pem: bytes


def channel_credentials(credentials: NodeCredentials) -> grpc.ChannelCredentials:
    """Mutual TLS with the node certificate, trusting the node PKI root for the server."""
    return grpc.ssl_channel_credentials(
        root_certificates=credentials.roots_pem,
        private_key=credentials.private_key_pem,
        certificate_chain=credentials.chain_pem,
    )


def node_xds_client(
    xds_address: str, node: str, state: Any, credentials: NodeCredentials, *, l7: Any = None
) -> Any:
    """An ``XdsClient`` that follows the control plane as ``node`` into ``state`` (a
    ``ProxyState``), authenticated with the node's credentials (not started)."""
    from ambient.xds.client import XdsClient

    return XdsClient(
        xds_address,
        node,
        state,
        credentials=channel_credentials(credentials),
        channel_options=CHANNEL_OPTIONS,
        l7=l7,
    )


def token_xds_client(
    xds_address: str, node: str, state: Any, auth: TokenAuth, *, l7: Any = None
) -> Any:
    """An ``XdsClient`` for ``node`` that sends ``auth``'s current token with each stream
    (not started)."""
    from ambient.xds.client import XdsClient

    async def metadata() -> tuple[tuple[str, str], ...]:
        return bearer_metadata(await auth.source.token())

    return XdsClient(
        xds_address,
        node,
        state,
        credentials=grpc.ssl_channel_credentials(root_certificates=auth.roots_pem),
        channel_options=CHANNEL_OPTIONS,
        l7=l7,
        call_metadata=metadata,
    )


@dataclass(frozen=True)
class ClusterIdentity:
    """Where a cluster's ztunnel gets its token (``ambient ztunnel --kubeconfig`` etc.).

    ``token_file``: a projected token, read per call. Otherwise TokenRequest through
    ``target`` for ``namespace/service_account`` bound to pod ``pod_name`` (and
    ``pod_uid`` if known). ``roots_pem``: the control plane's server CA.
    """

    roots_pem: bytes
    pod_name: str = ""
    pod_uid: str | None = None
    namespace: str = "istio-system"
    service_account: str = "ztunnel"
    target: Any = None  # ambient.kube.api.ClusterTarget
    token_file: Path | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[TokenAuth]:
        """The ``TokenAuth`` (enter inside the event loop), its first token already got.

        Raises ``TokenError`` naming the problem: an unusable kubeconfig, a token file
        that cannot be read, a TokenRequest the cluster refuses."""
        if self.token_file is not None:
            source: TokenSource = FileTokenSource(self.token_file)
            await source.token()
            yield TokenAuth(source, self.roots_pem)
            return
        from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
        from ambient.kube.tokenrequest import TokenRequestSource

        target = self.target or ClusterTarget()
        try:
            client = KubeClient(load_config(target))
        except KubeError as err:
            raise TokenError(str(err)) from None
        try:
            source = TokenRequestSource(
                client,
                pod_name=self.pod_name,
                pod_uid=self.pod_uid,
                namespace=self.namespace,
                service_account=self.service_account,
            )
            await source.token()
            yield TokenAuth(source, self.roots_pem)
        finally:
            await client.close()
