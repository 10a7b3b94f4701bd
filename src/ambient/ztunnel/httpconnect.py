"""The HTTP CONNECT proxy of a pod in local mode: ``<podIP>:15081``, beside SOCKS5 on 15080.

gRPC clients (grpc core in grpcio, grpc-go, grpc-java), Go's ``net/http`` and
many others speak HTTP proxies but not SOCKS5. A client sends ``CONNECT
host:port HTTP/1.1`` (a mesh name, a VIP or an IP) and headers; ztunnel
answers ``200`` once it has a destination and then relays bytes, exactly as
for a SOCKS5 CONNECT: the same :class:`~ambient.ztunnel.outbound.OutboundHandler`,
so the same identity (the pod whose address was dialled), resolution and
policy rules, and the same peer rule (only the pod's own address or an unbound
local client may use the port, ``selfcall.socks_peer_allowed``).

Decisions (squid's and Envoy's answers where they have one):

- only ``CONNECT`` is served; any other method (an absolute-form ``GET
  http://...`` of a client configured with ``http_proxy``) is ``405`` with
  ``Allow: CONNECT`` (plain-HTTP proxying is another protocol; such clients
  use ``ALL_PROXY``, SOCKS5); a malformed request line, target or header
  section is ``400``; a head over 16 KiB ``431``; then the connection closes;
- a destination that is neither a mesh name nor in DNS is ``503`` (squid's
  DNS failure); a mesh listener as the target (``selfcall``) ``403``;
- ``Proxy-Authorization`` and every other header is ignored (no proxy
  authentication: the pod is who dialled the pod's address);
- bytes the client sends after the head (before the ``200``) are kept and
  relayed first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re

from ambient.ztunnel import socks5
from ambient.ztunnel.outbound import OutboundHandler, ProxyReplies, serves

__all__ = ["HTTP_CONNECT_PORT", "REPLIES", "ConnectError", "HttpConnectProtocol", "parse_connect"]

log = logging.getLogger("ambient.ztunnel")

HTTP_CONNECT_PORT = 15081
MAX_HEAD = 16 * 1024


def _answer(status: int, reason: str, extra: str = "") -> bytes:
    body = f"{status} {reason}\n" if status != 200 else ""
    headers = f"content-length: {len(body)}\r\n{extra}" if body else extra
    closing = "connection: close\r\n" if status != 200 else ""
    return f"HTTP/1.1 {status} {reason}\r\n{headers}{closing}\r\n{body}".encode()


REPLIES = ProxyReplies(
    succeeded=_answer(200, "Connection established"),
    unreachable=_answer(503, "Service Unavailable"),
    not_allowed=_answer(403, "Forbidden"),
)

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) (\S+) HTTP/1\.[01]")
_FIELD = re.compile(rf"{_TOKEN}:[ \t]*[\t \x21-\x7e\x80-\xff]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")


class ConnectError(Exception):
    """A request the proxy refuses; ``answer`` is the response to send before closing."""

    def __init__(self, message: str, answer: bytes) -> None:
        super().__init__(message)
        self.answer = answer


def parse_connect(head: bytes) -> socks5.Socks5Request:
    """The destination of a CONNECT request head (up to and without its blank line).

    Raises :class:`ConnectError` with the answer for anything else."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover (latin-1 decodes everything)
        raise ConnectError("undecodable head", _answer(400, "Bad Request")) from None
    line, _, fields = text.partition("\r\n")
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise ConnectError(f"malformed request line {line[:80]!r}", _answer(400, "Bad Request"))
    method, target = match.group(1, 2)
    for field in fields.split("\r\n") if fields else ():
        if not _FIELD.fullmatch(field):
            raise ConnectError(f"malformed header {field[:80]!r}", _answer(400, "Bad Request"))
    if method != "CONNECT":
        raise ConnectError(
            f"method {method} (only CONNECT is served)",
            _answer(405, "Method Not Allowed", "allow: CONNECT\r\n"),
        )
    return _target(target)


def _target(target: str) -> socks5.Socks5Request:
    """``host:port`` (authority-form, RFC 9110 9.3.6): an IPv4, ``[IPv6]`` or a hostname."""
    bad = ConnectError(f"bad CONNECT target {target[:80]!r}", _answer(400, "Bad Request"))
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise bad
    port = int(port_text)
    if not 0 < port < 65536:
        raise bad
    if host.startswith("[") and host.endswith("]"):
        try:
            return socks5.Socks5Request(str(ipaddress.IPv6Address(host[1:-1])), port, False)
        except ValueError:
            raise bad from None
    try:
        return socks5.Socks5Request(str(ipaddress.IPv4Address(host)), port, False)
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise bad
    return socks5.Socks5Request(host.lower().rstrip("."), port, True)


class HttpConnectProtocol(asyncio.Protocol):
    """One client of a pod's HTTP CONNECT port: the request head, then hand-over to a relay."""

    def __init__(self, handler: OutboundHandler) -> None:
        self.handler = handler
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self._deadline: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        peer = transport.get_extra_info("peername")
        here = transport.get_extra_info("sockname")
        if not serves(here, peer):
            # Only the pod itself may speak through its proxy ports (ambient.ztunnel.selfcall).
            log.warning(
                "outbound: refused HTTP CONNECT client %s on %s: not the pod's own address",
                peer[0] if peer else "?",
                here[0] if here else "?",
            )
            tcp.abort()
            return
        self._deadline = self.handler.handshakes.add(self, self.handler.loop)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._refuse(
                    ConnectError("head too large", _answer(431, "Request Header Fields Too Large"))
                )
            return
        if end + 4 > MAX_HEAD:
            self._refuse(
                ConnectError("head too large", _answer(431, "Request Header Fields Too Large"))
            )
            return
        try:
            request = parse_connect(self.buffer[:end])
        except ConnectError as exc:
            self._refuse(exc)
            return
        self._cancel_timer()
        self.transport.pause_reading()
        early, self.buffer = self.buffer[end + 4 :], b""
        self.handler.start(self.transport, request, early, replies=REPLIES)

    def _refuse(self, exc: ConnectError) -> None:
        assert self.transport is not None
        log.debug("outbound: HTTP CONNECT refused: %s", exc)
        self._cancel_timer()
        self.transport.write(exc.answer)
        self.transport.close()
        self.buffer = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def expired(self) -> None:
        """The request head took too long (``OutboundHandler.handshakes``)."""
        self._deadline = None
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._deadline is not None:
            self.handler.handshakes.discard(self._deadline, self)
            self._deadline = None
