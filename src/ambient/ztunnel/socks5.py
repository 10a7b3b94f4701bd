"""SOCKS5 (RFC 1928) server side, sans-io: CONNECT only, no authentication.

ztunnel's outbound listener for a pod speaks SOCKS5 on ``<podIP>:15080``: the
application (``ALL_PROXY=socks5h://...``) names the destination as an IP or a
hostname, which ztunnel resolves itself (the ``h`` in ``socks5h``).
Feed bytes to :class:`Socks5Handshake`; it returns the parsed request once
complete, or raises :class:`Socks5Error` with the reply code to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ambient.ipparse import ip_text, packed_ip, parse_ip

VERSION = 5
MAX_HANDSHAKE = 4 + 2 + 255 + 2 + 257  # greeting + request with the longest hostname


class Reply(IntEnum):
    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


class Socks5Error(Exception):
    """The client sent something we refuse; ``reply`` is the code to answer with (if any)."""

    def __init__(self, message: str, reply: Reply | None = Reply.GENERAL_FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Socks5Request:
    """A CONNECT request: ``host`` is an IP address or a hostname to resolve."""

    host: str
    port: int
    is_hostname: bool


GREETING = bytes([VERSION, 1, 0])
"""The greeting clients send: one method offered, "no authentication"."""
NO_AUTHENTICATION = bytes([VERSION, 0])
"""The method selection answering it."""
_CONNECT_IPV4 = bytes([VERSION, 1, 0, 1])
REQUESTS_KEPT = 4096
_REQUESTS: dict[bytes, Socks5Request] = {}


def quick_request(data: bytes) -> Socks5Request | None:
    """``data`` (after the greeting) when it is exactly a CONNECT to an IPv4 address and
    a port other than 0, as one segment brings it: the request (the same object for the
    same address and port: requests are immutable); else None, for
    :class:`Socks5Handshake` to take (partial data, other address types, refusals)."""
    if len(data) != 10 or data[:4] != _CONNECT_IPV4:
        return None
    key = data[4:]
    request = _REQUESTS.get(key)
    if request is None:
        port = int.from_bytes(key[4:], "big")
        if port == 0:
            return None
        request = Socks5Request(ip_text(packed_ip(key[:4])), port, False)
        if len(_REQUESTS) < REQUESTS_KEPT and type(key) is bytes:
            _REQUESTS[key] = request
    return request


class Socks5Handshake:
    """Parses the greeting and the CONNECT request as bytes arrive; ``greeted``: the
    greeting was already taken (and answered) by the caller."""

    def __init__(self, *, greeted: bool = False) -> None:
        self._buffer = bytearray()
        self._greeted = greeted
        self._out = bytearray()

    def data_to_send(self) -> bytes:
        """Bytes to write to the client now (method selection)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes) -> Socks5Request | None:
        """Consume bytes; returns the request once complete, else ``None``."""
        self._buffer += data
        if len(self._buffer) > MAX_HANDSHAKE:
            raise Socks5Error("SOCKS5 handshake too long", None)
        if not self._greeted and not self._parse_greeting():
            return None
        return self._parse_request()

    def leftover(self) -> bytes:
        """Bytes the client sent after its request (early application data)."""
        return bytes(self._buffer)

    def _parse_greeting(self) -> bool:
        buf = self._buffer
        if len(buf) < 2:
            return False
        if buf[0] != VERSION:
            raise Socks5Error(f"not SOCKS5 (version byte {buf[0]})", None)
        count = buf[1]
        if len(buf) < 2 + count:
            return False
        methods = bytes(buf[2 : 2 + count])
        del buf[: 2 + count]
        if 0 not in methods:
            self._out += bytes([VERSION, 0xFF])
            raise Socks5Error("client offers no 'no authentication' method", None)
        self._out += bytes([VERSION, 0])
        self._greeted = True
        return True

    def _parse_request(self) -> Socks5Request | None:
        buf = self._buffer
        if len(buf) < 5:
            return None
        version, command, _, atyp = buf[0], buf[1], buf[2], buf[3]
        if version != VERSION:
            raise Socks5Error(f"bad SOCKS5 request version {version}")
        if atyp == 1:
            end = 4 + 4
            if len(buf) < end + 2:
                return None
            host = ip_text(packed_ip(bytes(buf[4:end])))
            hostname = False
        elif atyp == 4:
            end = 4 + 16
            if len(buf) < end + 2:
                return None
            host = ip_text(packed_ip(bytes(buf[4:end])))
            hostname = False
        elif atyp == 3:
            length = buf[4]
            end = 5 + length
            if len(buf) < end + 2:
                return None
            try:
                host = bytes(buf[5:end]).decode("ascii")
            except UnicodeDecodeError:
                raise Socks5Error("hostname is not ASCII", Reply.HOST_UNREACHABLE) from None
            if not host:
                raise Socks5Error("empty hostname", Reply.HOST_UNREACHABLE)
            hostname = True
        else:
            raise Socks5Error(
                f"address type {atyp} not supported", Reply.ADDRESS_TYPE_NOT_SUPPORTED
            )
        port = int.from_bytes(buf[end : end + 2], "big")
        del buf[: end + 2]
        if command != 1:
            raise Socks5Error(
                f"SOCKS5 command {command} not supported (CONNECT only)",
                Reply.COMMAND_NOT_SUPPORTED,
            )
        if port == 0:
            raise Socks5Error("destination port 0", Reply.CONNECTION_REFUSED)
        if hostname:
            try:  # "socks5h" clients may still send IP literals as hostnames
                host = str(parse_ip(host))
                hostname = False
            except ValueError:
                pass
        return Socks5Request(host, port, hostname)


def reply(code: Reply, bound: tuple[str, int] = ("0.0.0.0", 0)) -> bytes:
    """The server's reply to a CONNECT: ``code`` and the bound address."""
    ip = parse_ip(bound[0])
    atyp = 1 if ip.version == 4 else 4
    return bytes([VERSION, int(code), 0, atyp]) + ip.packed + bound[1].to_bytes(2, "big")
