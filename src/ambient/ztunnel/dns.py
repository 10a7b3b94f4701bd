"""ztunnel's DNS proxy (port 15053 in each enrolled pod): mesh hostnames answered locally.

Decisions (Istio's DNS capture, reduced to what a mesh without Kubernetes needs):

- A and AAAA questions for a mesh hostname (``orders``, ``orders.shop``,
  ``orders.shop.svc.cluster.local``, a ServiceEntry host) are answered with the
  service's VIPs, or for a headless service its endpoints' addresses; TTL 30 s,
  authoritative. A name that is a mesh service but has no address of the
  asked family gets an empty NOERROR answer, so resolvers do not retry.
- Any other name under ``cluster.local`` is NXDOMAIN: the mesh is
  authoritative there, so search-list expansion (``orders.shop.svc.cluster.local``,
  then ...) ends quickly.
- Everything else is REFUSED: pods in these namespaces have no route to the
  host's resolvers, and a refusal makes the client's resolver give up at once
  instead of timing out.
- UDP and TCP (RFC 1035 4.2.2 / RFC 7766: each message preceded by its
  two-byte length; the same answers). Over UDP malformed queries get FORMERR
  when the header can be read, and are dropped otherwise; over TCP a query too
  broken to answer ends the connection. TCP connections may carry many queries
  (pipelined; answered in order) and are closed after :data:`TCP_IDLE_TIMEOUT`
  seconds without one, as RFC 7766 advises servers.

:func:`answer` is a pure function of (query bytes, resolver) and
:class:`TcpFramer` splits a TCP byte stream into messages without I/O: they are
what the tests and the fuzz targets drive; :class:`DnsProtocol` (UDP) and
:class:`DnsTcpProtocol` are the asyncio edges.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ambient.state.proxy import ProxyState
from ambient.state.workload import IPAddress

log = logging.getLogger("ambient.ztunnel.dns")

DNS_PORT = 15053
TTL = 30
TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
TCP_IDLE_TIMEOUT = 10.0
RCODE_OK, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 1, 2, 3, 5

Resolver = Callable[[str], Sequence[IPAddress] | None]
"""Addresses of a mesh hostname, or None when the mesh does not know the name."""


@dataclass(frozen=True, slots=True)
class Question:
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    end: int  # offset just past the question in the query


class DnsFormatError(ValueError):
    """The query cannot be parsed."""


def parse_question(query: bytes) -> Question:
    """The first question of a DNS query; raises :class:`DnsFormatError`."""
    if len(query) < 12:
        raise DnsFormatError("shorter than a DNS header")
    flags, qdcount = struct.unpack_from("!HH", query, 2)
    if flags & 0x8000:
        raise DnsFormatError("a response, not a query")
    if qdcount != 1:
        raise DnsFormatError(f"{qdcount} questions (expected 1)")
    labels: list[str] = []
    offset = 12
    while True:
        if offset >= len(query):
            raise DnsFormatError("name runs past the end")
        length = query[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise DnsFormatError("compressed or extended label in a question")
        if offset + length > len(query):
            raise DnsFormatError("label runs past the end")
        labels.append(query[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
        if sum(len(label) + 1 for label in labels) > 255:
            raise DnsFormatError("name longer than 255 bytes")
    if offset + 4 > len(query):
        raise DnsFormatError("question type and class missing")
    qtype, qclass = struct.unpack_from("!HH", query, offset)
    return Question(".".join(labels), qtype, qclass, offset + 4)


def _header(query: bytes, rcode: int, answers: int, authoritative: bool) -> bytes:
    (ident, flags) = struct.unpack_from("!HH", query, 0)
    opcode_rd = flags & 0x7900  # opcode and RD copied from the query
    out = 0x8000 | opcode_rd | (0x0400 if authoritative else 0) | rcode
    return struct.pack("!HHHHHH", ident, out, 1, answers, 0, 0)


def answer(query: bytes, resolve: Resolver) -> bytes | None:
    """The response to ``query`` (None: too broken to answer)."""
    try:
        question = parse_question(query)
    except DnsFormatError:
        if len(query) < 12:
            return None
        return struct.pack("!HHHHHH", query[0] << 8 | query[1], 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
    echoed = query[12 : question.end]
    if question.qclass != CLASS_IN:
        return _header(query, RCODE_REFUSED, 0, False) + echoed
    addresses = resolve(question.name)
    if addresses is None:
        if question.name == "cluster.local" or question.name.endswith(".cluster.local"):
            return _header(query, RCODE_NXDOMAIN, 0, True) + echoed
        return _header(query, RCODE_REFUSED, 0, False) + echoed
    records = b""
    count = 0
    for address in addresses:
        if question.qtype == TYPE_A and address.version == 4:
            rtype = TYPE_A
        elif question.qtype == TYPE_AAAA and address.version == 6:
            rtype = TYPE_AAAA
        else:
            continue
        data = address.packed
        records += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(data)) + data
        count += 1
    return _header(query, RCODE_OK, count, True) + echoed + records


def mesh_resolver(state: ProxyState, namespace: Callable[[], str]) -> Resolver:
    """Resolve against ztunnel's pushed state, short names relative to ``namespace()``."""

    def resolve(name: str) -> Sequence[IPAddress] | None:
        service = state.resolve_host(name, namespace())
        if service is None:
            return None
        if service.addresses:
            return list(service.addresses)
        return [w.addresses[0] for w in state.endpoints(service) if w.addresses]

    return resolve


def client_namespace_resolver(state: ProxyState, client_ip: str) -> Resolver:
    """A resolver for the pod at ``client_ip`` (its namespace qualifies short names)."""

    def namespace() -> str:
        workload = state.workload_by_ip(ipaddress.ip_address(client_ip))
        return workload.namespace if workload is not None else "default"

    return mesh_resolver(state, namespace)


class DnsProtocol(asyncio.DatagramProtocol):
    """Answers each datagram; ``resolver_for(client_ip)`` picks the client's view."""

    def __init__(self, resolver_for: Callable[[str], Resolver]) -> None:
        self.resolver_for = resolver_for
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            response = answer(data, self.resolver_for(str(addr[0])))
        except Exception as exc:  # never let one bad query stop the server
            log.warning("DNS: failed to answer %s: %s: %s", addr[0], type(exc).__name__, exc)
            return
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


class TcpFramer:
    """DNS over TCP framing, sans I/O: feed bytes, get whole messages back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data`` (their length prefixes removed)."""
        self._buffer += data
        messages = []
        while len(self._buffer) >= 2:
            length = int.from_bytes(self._buffer[:2], "big")
            if len(self._buffer) < 2 + length:
                break
            messages.append(bytes(self._buffer[2 : 2 + length]))
            del self._buffer[: 2 + length]
        return messages


def tcp_frame(message: bytes) -> bytes:
    """``message`` with its two-byte length prefix (messages are at most 65,535 bytes)."""
    return len(message).to_bytes(2, "big") + message


class DnsTcpProtocol(asyncio.Protocol):
    """Answers the length-prefixed queries of one TCP connection, in order."""

    def __init__(self, resolver_for: Callable[[str], Resolver]) -> None:
        self.resolver_for = resolver_for
        self.framer = TcpFramer()
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.client = str(peer[0])
        self._arm()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for query in self.framer.feed(data):
            try:
                response = answer(query, self.resolver_for(self.client))
            except Exception as exc:  # never let one bad query stop the server
                log.warning(
                    "DNS/TCP: failed to answer %s: %s: %s", self.client, type(exc).__name__, exc
                )
                response = None
            if response is None:
                self.transport.close()
                return
            self.transport.write(tcp_frame(response))
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(TCP_IDLE_TIMEOUT, self._timeout)

    def _timeout(self) -> None:
        if self.transport is not None:
            self.transport.close()
