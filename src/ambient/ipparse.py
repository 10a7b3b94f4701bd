"""IP addresses parsed and printed once per address on the connection path.

``ipaddress.ip_address`` costs ~6 µs a call and ``str()`` of an address ~1 µs; a
connection through ztunnel parses and prints the same few addresses (the pod's
own, its peer's, the destination's) several times on each side. With these caches
a repeated parse or print is a dictionary lookup. The caches are bounded
(addresses past the bound are parsed or printed each time, as before); a refused
text is never kept.
"""

from __future__ import annotations

import ipaddress

__all__ = ["address_text", "ip_text", "packed_ip", "parse_ip"]

MAX_KEPT = 4096  # ~0.6 MB: far more than the addresses one node's connections use
_KEPT: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
_TEXT: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
_PACKED: dict[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address(text)`` for a string; raises ``ValueError`` as it does."""
    ip = _KEPT.get(text)
    if ip is None:
        ip = ipaddress.ip_address(text)
        if len(_KEPT) < MAX_KEPT and type(text) is str:
            _KEPT[text] = ip
    return ip


def packed_ip(packed: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of 4 or 16 bytes in network order (as SOCKS5 sends it); raises
    ``ValueError`` for any other length."""
    ip = _PACKED.get(packed)
    if ip is None:
        if len(packed) == 4:
            ip = ipaddress.IPv4Address(packed)
        elif len(packed) == 16:
            ip = ipaddress.IPv6Address(packed)
        else:
            raise ValueError(f"{len(packed)} bytes are not an IP address")
        if len(_PACKED) < MAX_KEPT and type(packed) is bytes:
            _PACKED[packed] = ip
    return ip


def ip_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``str(ip)``."""
    text = _TEXT.get(ip)
    if text is None:
        text = str(ip)
        if len(_TEXT) < MAX_KEPT and type(ip) in (ipaddress.IPv4Address, ipaddress.IPv6Address):
            _TEXT[ip] = text
    return text


def address_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    """``ip:port``, or ``[ip]:port`` for IPv6 (as ``hbone.messages.SocketAddress`` prints)."""
    if ip.version == 6:
        return f"[{ip_text(ip)}]:{port}"
    return f"{ip_text(ip)}:{port}"
