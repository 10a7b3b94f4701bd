"""The waypoint proxy's data path: HBONE in, HTTP/1.1 + HTTP/2 policy and routing, HBONE out.

Modules: ``server`` (the Waypoint: listeners, accepting tunnels), ``sniff``
(protocol detection), ``http1`` / ``http2`` (downstream codecs),
``forward`` (one request: authn, authz, route, forward), ``upstream``
(HTTP/1.1 over HBONE with keep-alive), ``balancer`` (endpoints and pickers),
``tcp`` (passthrough), ``metrics`` / ``accesslog`` (telemetry),
``defaults`` (what runs when no routing or policy is configured).
"""

from ambient.waypoint.proxy.server import Waypoint

__all__ = ["Waypoint"]
