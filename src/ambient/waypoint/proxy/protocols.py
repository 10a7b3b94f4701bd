"""Which HTTP version the waypoint speaks to a backend, as Envoy's waypoint clusters do.

Istio gives each service port's cluster the protocol of the port
(``state.workload.AppProtocol``, from ``appProtocol`` or the port name):

- ``HTTP11``: HTTP/1.1 upstream, whatever the client spoke;
- ``HTTP2`` and ``GRPC``: HTTP/2 (h2c, prior knowledge, inside the HBONE tunnel);
- ``UNKNOWN`` (not declared): the downstream's version (Envoy's
  ``USE_DOWNSTREAM_PROTOCOL``), so an h2c client reaches an undeclared backend
  over HTTP/2 and an HTTP/1.1 client over HTTP/1.1;
- ``TCP`` and ``TLS``: no HTTP at all; the tunnel is passed through at L4
  (``passes_through``), as Envoy's waypoint uses a TCP proxy for such ports.

Upgrades (WebSocket) always go upstream as HTTP/1.1 ``Upgrade``, whatever the
port declares (``proxy.upgrade``).
"""

from __future__ import annotations

from ambient.state.workload import AppProtocol

__all__ = ["HTTP2", "HTTP11", "passes_through", "upstream_version"]

HTTP11 = "HTTP/1.1"
HTTP2 = "HTTP/2"

_DECLARED = {
    AppProtocol.HTTP11: HTTP11,
    AppProtocol.HTTP2: HTTP2,
    AppProtocol.GRPC: HTTP2,
}


def upstream_version(declared: AppProtocol, downstream: str) -> str:
    """The HTTP version to a backend port that declares ``declared``, for a ``downstream`` request."""
    return _DECLARED.get(declared, HTTP2 if downstream == HTTP2 else HTTP11)


def passes_through(declared: AppProtocol) -> bool:
    """True for ports the waypoint does not parse as HTTP (declared TCP or TLS)."""
    return declared in (AppProtocol.TCP, AppProtocol.TLS)
