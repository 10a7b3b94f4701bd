"""PROXY protocol v2 headers (as ztunnel writes them for ``ApplicationTunnel.PROXY``).

The header carries the original source and destination addresses and, in
TLV type 0xD0, the SPIFFE identity ztunnel authenticated for the peer.
"""

from __future__ import annotations

import ipaddress

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PEER_IDENTITY_TLV = 0xD0

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def header(src: tuple[IP, int], dst: tuple[IP, int], identity: str | None) -> bytes:
    """A v2 PROXY header for TCP from ``src`` to ``dst``, with the peer identity if known."""
    if src[0].version != dst[0].version:  # mixed families: say nothing about addresses
        family, addresses = 0x00, b""
    elif src[0].version == 4:
        family = 0x11
        addresses = (
            src[0].packed + dst[0].packed + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
        )
    else:
        family = 0x21
        addresses = (
            src[0].packed + dst[0].packed + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
        )
    tlvs = b""
    if identity:
        value = identity.encode()
        tlvs = bytes([PEER_IDENTITY_TLV]) + len(value).to_bytes(2, "big") + value
    body = addresses + tlvs
    return SIGNATURE + bytes([0x21, family]) + len(body).to_bytes(2, "big") + body
