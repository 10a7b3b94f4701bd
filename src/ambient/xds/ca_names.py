"""The certificate service's wire names, shared by its server (``xds.ca_service``) and its
clients (``xds.ca_client``): a node proxy imports these, not the server and its CA."""

from __future__ import annotations

__all__ = [
    "CA_SERVICE",
    "CREATE_CERTIFICATE_METHOD",
    "DEFAULT_JOIN_PORT",
    "DEFAULT_PORT",
    "IMPERSONATED_IDENTITY",
    "JOIN_METHOD",
    "NODE_NAME",
    "NODE_SERVICE",
    "RENEW_METHOD",
]

CA_SERVICE = "istio.v1.auth.IstioCertificateService"
NODE_SERVICE = "ambient.node.v1.NodeService"
CREATE_CERTIFICATE_METHOD = f"/{CA_SERVICE}/CreateCertificate"
JOIN_METHOD = f"/{NODE_SERVICE}/Join"
RENEW_METHOD = f"/{NODE_SERVICE}/Renew"
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"  # request metadata: the identity to sign for
NODE_NAME = "NodeName"  # request metadata of Join: the node the token was made for
DEFAULT_PORT = 15012
DEFAULT_JOIN_PORT = 15013
