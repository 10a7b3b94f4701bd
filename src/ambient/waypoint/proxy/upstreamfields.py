"""The request's fields as they go upstream (``Forwarder``): one pass, and a repeated head's
pass kept.

From the client's fields: hop-by-hop fields dropped (``messages.strip_hop_by_hop``),
``host`` dropped (the upstream codecs send the authority), cookies joined into one
field (HTTP/2 splits them; HTTP/1.1 wants one, RFC 9113 8.2.3), ``x-request-id``
replaced by the request's id, ``x-forwarded-proto: http`` added when absent, then the
route's header changes applied.

Clients repeat their heads (the same fields request after request) and routes usually
change no header: then everything but the id is the same as last time, so the last
head's result is kept (one slot, compared by value) and only the id is put in. A head
carrying credentials (``authorization``, ``cookie``, ...) is never kept.
"""

from __future__ import annotations

from ambient.waypoint.model import HeaderOps, Headers
from ambient.waypoint.proxy.messages import strip_hop_by_hop

__all__ = ["UpstreamFields"]

_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})
_PROTO = (("x-forwarded-proto", "http"),)


class UpstreamFields:
    """The upstream fields of requests, with the last head's pass kept (see the module)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[Headers, Headers, Headers] | None = None  # (head, before, after)

    def fields(self, headers: Headers, ops: HeaderOps, request_id: str) -> Headers:
        """The fields to send upstream for a request with ``headers`` and id ``request_id``."""
        if ops.set or ops.add or ops.remove:  # the route changes fields: no shortcut
            before, after, _ = _split(headers)
            return ops.apply((*before, ("x-request-id", request_id), *after))
        last = self._last
        if last is not None and last[0] == headers:
            return (*last[1], ("x-request-id", request_id), *last[2])
        before, after, secret = _split(headers)
        self._last = None if secret else (headers, before, after)
        return (*before, ("x-request-id", request_id), *after)


def _split(headers: Headers) -> tuple[Headers, Headers, bool]:
    """(the fields before the id, the fields after it, whether the head has credentials)."""
    kept = []
    cookies = 0
    forwarded_proto = False
    secret = False
    for pair in strip_hop_by_hop(headers):  # one pass over the usual head
        name = pair[0]
        if name == "host" or name == "x-request-id":
            continue
        if name in _CREDENTIALS:
            secret = True
            if name == "cookie":
                cookies += 1
        elif name == "x-forwarded-proto":
            forwarded_proto = True
        kept.append(pair)
    if cookies > 1:  # HTTP/2 splits cookies; HTTP/1.1 wants one field (RFC 9113 8.2.3)
        joined = "; ".join(v for k, v in kept if k == "cookie")
        kept = [(k, v) for k, v in kept if k != "cookie"]
        kept.append(("cookie", joined))
    return tuple(kept), (() if forwarded_proto else _PROTO), secret
