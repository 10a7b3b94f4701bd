"""IP address text parsed once per address: ``ipaddress.ip_address`` costs ~6 µs a call.

A connection through ztunnel parses the same few addresses (the pod's own,
its peer's, the destination's) several times on each side; with this cache a
repeated parse is a dictionary lookup. The cache is bounded (addresses past
the bound are parsed each time, as before); a refused text is never kept.
"""

from __future__ import annotations

import ipaddress

__all__ = ["parse_ip"]

MAX_KEPT = 4096  # ~0.6 MB: far more than the addresses one node's connections use
_KEPT: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address(text)`` for a string; raises ``ValueError`` as it does."""
    ip = _KEPT.get(text)
    if ip is None:
        ip = ipaddress.ip_address(text)
        if len(_KEPT) < MAX_KEPT and type(text) is str:
            _KEPT[text] = ip
    return ip
