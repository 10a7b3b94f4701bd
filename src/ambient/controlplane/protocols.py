"""What a service port speaks, as istiod decides it for the workload API's ``Port.app_protocol``.

Kubernetes Service ports (Istio's ``ConvertProtocol``, then the workload API mapping):

1. ``protocol: UDP`` / ``SCTP``: not TCP (such ports are not indexed at all);
2. ``appProtocol`` when set: Kubernetes' standard names first
   (``kubernetes.io/h2c`` is HTTP/2, ``kubernetes.io/ws`` HTTP/1.1,
   ``kubernetes.io/wss`` TLS), else parsed like a port name;
3. else the port ``name``: ``grpc-web`` as a prefix, else the part before the
   first ``-`` (``http-api`` is ``http``), compared case-insensitively;
4. nothing recognised: the well-known ports of MongoDB (27017), Redis (6379)
   and MySQL (3306) are TCP, anything else is UNKNOWN (detected by sniffing).

Names (Istio's ``protocol.Parse``, plus ``h2c``, which the issue that asked
for this lists and Kubernetes spells ``kubernetes.io/h2c``): ``http``,
``http_proxy`` -> HTTP11; ``http2``, ``h2c`` -> HTTP2; ``grpc`` -> GRPC;
``grpc-web`` -> GRPC (decision: Envoy sends gRPC-Web upstream over HTTP/2,
as it does gRPC; istiod writes UNKNOWN, which would make our waypoint use
the downstream's HTTP/1.1); ``tcp``, ``mongo``, ``redis``, ``mysql``,
``thrift``, ``dubbo``, ``kafka``, ``zookeeper`` -> TCP; ``https``, ``tls`` ->
TLS. istiod writes UNKNOWN for TCP and TLS; ztunnel's proto has the values,
and our waypoint needs them: a port declared TCP or TLS is passed through at
L4 as Envoy's waypoint does (no HTTP parsing).

ServiceEntry ports carry Istio's protocol name in ``protocol`` (``HTTP``,
``GRPC``, ``TCP``...), parsed the same way.
"""

from __future__ import annotations

from ambient.state.workload import AppProtocol

__all__ = ["kube_port_protocol", "parse_protocol", "service_entry_protocol"]

_NAMES = {
    "http": AppProtocol.HTTP11,
    "http_proxy": AppProtocol.HTTP11,
    "http2": AppProtocol.HTTP2,
    "h2c": AppProtocol.HTTP2,
    "grpc": AppProtocol.GRPC,
    "grpc-web": AppProtocol.GRPC,
    "https": AppProtocol.TLS,
    "tls": AppProtocol.TLS,
    **dict.fromkeys(
        ("tcp", "mongo", "redis", "mysql", "thrift", "dubbo", "kafka", "zookeeper"),
        AppProtocol.TCP,
    ),
}
_KUBERNETES = {
    "kubernetes.io/h2c": AppProtocol.HTTP2,
    "kubernetes.io/ws": AppProtocol.HTTP11,
    "kubernetes.io/wss": AppProtocol.TLS,
}
_WELL_KNOWN_TCP_PORTS = frozenset({27017, 6379, 3306})


def parse_protocol(name: str) -> AppProtocol:
    """A protocol name (``grpc``, ``HTTP2``...), or UNKNOWN."""
    return _NAMES.get(name.lower(), AppProtocol.UNKNOWN)


def kube_port_protocol(
    port: int, name: str, protocol: str = "TCP", app_protocol: str | None = None
) -> AppProtocol:
    """The app protocol of a Kubernetes Service port (see the module docstring)."""
    if protocol.upper() != "TCP":
        return AppProtocol.UNKNOWN
    text = name
    if app_protocol:
        known = _KUBERNETES.get(app_protocol)
        if known is not None:
            return known
        text = app_protocol
    if text.lower().startswith("grpc-web"):
        return AppProtocol.GRPC
    found = parse_protocol(text.split("-", 1)[0])
    if found is AppProtocol.UNKNOWN and port in _WELL_KNOWN_TCP_PORTS:
        return AppProtocol.TCP
    return found


def service_entry_protocol(protocol: str) -> AppProtocol:
    """The app protocol of a ServiceEntry port's ``protocol`` (``HTTP``, ``GRPC``, ``TCP``...)."""
    return parse_protocol(protocol)
