"""PROXY protocol v2 headers as ztunnel writes them for ApplicationTunnel PROXY."""

from __future__ import annotations

import ipaddress

from ambient.ztunnel.proxy_protocol import PEER_IDENTITY_TLV, SIGNATURE, header

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def test_ipv4_with_identity() -> None:
    data = header(
        (V4("10.0.0.1"), 40000), (V4("10.0.0.2"), 8080), "spiffe://cluster.local/ns/a/sa/b"
    )
    assert data[:12] == SIGNATURE
    assert data[12] == 0x21  # version 2, PROXY command
    assert data[13] == 0x11  # TCP over IPv4
    length = int.from_bytes(data[14:16], "big")
    body = data[16:]
    assert len(body) == length
    assert body[:4] == V4("10.0.0.1").packed and body[4:8] == V4("10.0.0.2").packed
    assert int.from_bytes(body[8:10], "big") == 40000 and int.from_bytes(body[10:12], "big") == 8080
    tlv = body[12:]
    assert tlv[0] == PEER_IDENTITY_TLV
    assert tlv[3:] == b"spiffe://cluster.local/ns/a/sa/b"
    assert int.from_bytes(tlv[1:3], "big") == len(tlv) - 3


def test_ipv6_without_identity() -> None:
    data = header((V6("fd00::1"), 1), (V6("fd00::2"), 2), None)
    assert data[13] == 0x21  # TCP over IPv6
    assert int.from_bytes(data[14:16], "big") == 36  # addresses only, no TLV


def test_mixed_families_carry_no_addresses() -> None:
    data = header((V4("10.0.0.1"), 1), (V6("fd00::2"), 2), "spiffe://cluster.local/ns/a/sa/b")
    assert data[13] == 0x00
    assert data[16] == PEER_IDENTITY_TLV
