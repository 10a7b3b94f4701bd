"""HBONE request/response values: the CONNECT request, its headers and status codes.

Pure functions, no I/O. Parsing is strict: anything that is not exactly what
HBONE puts on the wire is a :class:`BadRequest` naming what is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import IntEnum

from ambient.ipparse import address_text, parse_ip

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HBONE_PORT = 15008
# RFC 9110 token: what a Forwarded parameter value may be unquoted (RFC 7239).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Status(IntEnum):
    """CONNECT response codes and what they mean in HBONE."""

    OK = 200  # authorized and the upstream is connected; bytes flow from here on
    BAD_REQUEST = 400  # malformed request, or a target that is not served here
    UNAUTHORIZED = 401  # denied by policy
    SERVICE_UNAVAILABLE = 503  # upstream unreachable


class BadRequest(ValueError):
    """A CONNECT request that HBONE does not accept (answered with 400)."""


_PARSED: dict[str, SocketAddress] = {}
_PARSED_KEPT = 1024


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """An IP address and port, printed as ``ip:port`` or ``[ipv6]:port``."""

    ip: IPAddress
    port: int

    def __str__(self) -> str:
        return address_text(self.ip, self.port)

    @classmethod
    def parse(cls, text: str) -> SocketAddress:
        """Parse ``ip:port`` / ``[ipv6]:port``; hostnames are refused (HBONE targets are IPs).
        Addresses parsed recently are kept (a CONNECT's ``:authority`` repeats stream after
        stream): a repeated parse is a dictionary lookup."""
        parsed = _PARSED.get(text)
        if parsed is None or cls is not SocketAddress:
            parsed = cls._parse(text)
            if len(_PARSED) >= _PARSED_KEPT:
                _PARSED.clear()
            _PARSED[text] = parsed
        return parsed

    @classmethod
    def _parse(cls, text: str) -> SocketAddress:
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
            if not sep:
                raise BadRequest(f"address {text!r}: expected [ipv6]:port")
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise BadRequest(f"address {text!r}: expected ip:port")
            if ":" in host:
                raise BadRequest(f"address {text!r}: an IPv6 address must be in brackets")
        try:
            ip = parse_ip(host)
        except ValueError:
            raise BadRequest(f"address {text!r}: {host!r} is not an IP address") from None
        if ip.version == 6 and ip.scope_id is not None:
            raise BadRequest(f"address {text!r}: a zone index (%) is not an HBONE target")
        # ASCII digits only: str.isdigit() also takes "²" or "٣", which int() then refuses.
        if not (0 < len(port_text) <= 5 and port_text.isascii() and port_text.isdigit()):
            raise BadRequest(f"address {text!r}: port {port_text!r} is not in 1..65535")
        port = int(port_text)
        if not 0 < port < 65536:
            raise BadRequest(f"address {text!r}: port {port_text!r} is not in 1..65535")
        return cls(ip, port)


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """One HBONE CONNECT: where to, and the metadata HBONE carries with it."""

    authority: SocketAddress
    forwarded_for: SocketAddress | None = None
    forwarded_host: str | None = None
    baggage: str | None = None
    traceparent: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = field(default=())

    def to_headers(self) -> list[tuple[str, str]]:
        """The HTTP/2 header list: ``:method``, ``:authority`` (no ``:scheme``/``:path``)."""
        headers = [(":method", "CONNECT"), (":authority", str(self.authority))]
        if self.forwarded_for is not None:
            value = f'for="{self.forwarded_for}"'
            if self.forwarded_host and _TOKEN.fullmatch(self.forwarded_host):
                value += f";host={self.forwarded_host}"  # a DNS name always is a token
            headers.append(("forwarded", value))
        if self.baggage:
            headers.append(("baggage", self.baggage))
        if self.traceparent:
            headers.append(("traceparent", self.traceparent))
        headers.extend(self.extra_headers)
        return headers

    @classmethod
    def from_headers(cls, headers: list[tuple[bytes, bytes]]) -> ConnectRequest:
        """Parse a received request header list; raises :class:`BadRequest`."""
        method = authority = None
        forbidden: str | None = None
        forwarded_for: SocketAddress | None = None
        forwarded_host: str | None = None
        baggage = traceparent = None
        extra: list[tuple[str, str]] = []
        for raw_name, raw_value in headers:
            name = raw_name.decode("ascii", "replace")
            value = raw_value.decode("latin-1")
            if name == ":method":
                method = value
            elif name == ":authority":
                authority = value
            elif name.startswith(":"):
                forbidden = forbidden or name
            elif name == "forwarded":
                forwarded_for, forwarded_host = parse_forwarded(value)
            elif name == "baggage":
                baggage = value
            elif name == "traceparent":
                traceparent = value
            else:
                extra.append((name, value))
        if method != "CONNECT":
            raise BadRequest(f"method {method!r} is not CONNECT")
        if forbidden is not None:
            raise BadRequest(f"CONNECT must not carry {forbidden}")
        if not authority:
            raise BadRequest("CONNECT without :authority")
        return cls(
            authority=SocketAddress.parse(authority),
            forwarded_for=forwarded_for,
            forwarded_host=forwarded_host,
            baggage=baggage,
            traceparent=traceparent,
            extra_headers=tuple(extra),
        )


def parse_forwarded(value: str) -> tuple[SocketAddress | None, str | None]:
    """Parse the first element of an RFC 7239 ``forwarded`` header (``for`` and ``host``).

    HBONE sends ``for="ip:port"`` and optionally ``;host=<service hostname>``.
    Unparseable ``for`` values (obfuscated identifiers, ``unknown``) yield ``None``.
    """
    first = value.split(",", 1)[0]
    forwarded_for: SocketAddress | None = None
    host: str | None = None
    for pair in first.split(";"):
        key, _, raw = pair.strip().partition("=")
        raw = raw.strip().strip('"')
        if key.lower() == "for":
            try:
                forwarded_for = SocketAddress._parse(raw)  # a new port each time: not kept
            except BadRequest:
                forwarded_for = None
        elif key.lower() == "host":
            host = raw or None
    return forwarded_for, host
