"""HBONE's HTTP/2 header blocks: ours HPACK-encoded plainly, the peer's checked in one pass.

Ours are encoded without Huffman coding (a valid choice for any decoder; the
CONNECT headers are short, so they grow by a few bytes while both ends save
the coding in pure Python), and the fields whose values are new on every
stream (``forwarded`` carries the client's port, ``traceparent`` a fresh id)
are sent as never-indexed literals instead of being inserted into the dynamic
table, where they would only evict the entries that do repeat.

h2's own inbound validation is a chain of seven generators over the header list,
about a tenth of the HTTP/2 work of a whole HBONE stream (CONNECT, 200, the two
END_STREAMs, both ends: ``bench/hbone_core.py``). :func:`check_block` refuses
exactly the blocks h2's ``validate_headers`` refuses (a differential test keeps
it so, ``tests/unit/hbone/test_fields.py``): field names that are empty,
uppercase, hold characters outside 0x21-0x7e or a colon past the first byte;
values holding NUL, CR or LF or starting or ending with a space or tab;
connection-specific fields; ``te`` other than ``trailers``; pseudo-header fields
that repeat, come after a regular field, are unknown, or do not fit the block
(a request needs ``:method``, an ordinary CONNECT no ``:scheme``/``:path``,
other requests both, ``:authority`` or ``host`` and the two equal, one ``host``,
a non-empty ``:path``; a response needs ``:status`` and no request field;
trailers none at all). A refused block is a connection error
(PROTOCOL_ERROR), as it was with h2 (and as Envoy treats a malformed request).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

import hpack

# Header values that differ on every stream: not worth a place in the HPACK table.
UNINDEXED = frozenset({"forwarded", "traceparent"})


class PlainEncoder(hpack.Encoder):
    """HPACK encoder that never uses Huffman coding (see the module docstring)."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


_CONNECTION = frozenset({b"connection", b"proxy-connection", b"keep-alive",
                         b"transfer-encoding", b"upgrade"})  # fmt: skip
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":status", b":protocol"})
_REQUEST_ONLY = frozenset({b":scheme", b":path", b":authority", b":method", b":protocol"})
_BAD_NAME = re.compile(rb"[^\x21-\x40\x5b-\x7e]")  # controls, space, uppercase, 0x7f-0xff
_WHITESPACE = b" \t"
_GOOD_NAMES: set[bytes] = set()  # names that passed (a peer choosing names grows it, up to:)
_GOOD_NAMES_KEPT = 512


class Block(Enum):
    REQUEST = "request"
    RESPONSE = "response"
    TRAILERS = "trailers"


class BadBlock(ValueError):
    """A header block RFC 9113 forbids; the message says what is wrong."""


def check_block(headers: list[tuple[bytes, bytes]], kind: Block) -> None:
    """Raise :class:`BadBlock` unless ``headers`` is a well-formed block of ``kind``."""
    pseudo: set[bytes] = set()
    regular = False
    method = authority = host = None
    for name, value in headers:
        _check_field(name, value)
        if name[0] == 0x3A:  # ":"
            if name in pseudo:
                raise BadBlock(f"pseudo-header field {name!r} repeated")
            if regular:
                raise BadBlock(f"pseudo-header field {name!r} after a regular field")
            if name not in _PSEUDO:
                raise BadBlock(f"unknown pseudo-header field {name!r}")
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value and kind is Block.REQUEST:
                raise BadBlock("an empty :path")
            continue
        regular = True
        if name in _CONNECTION:
            raise BadBlock(f"connection-specific header field {name!r}")
        if name == b"te" and value.lower() != b"trailers":
            raise BadBlock(f"te: {value!r} (only 'trailers' is allowed)")
        if name == b"host" and kind is Block.REQUEST:
            if host is not None:
                raise BadBlock("more than one host field")
            host = value
    if kind is Block.TRAILERS:
        if pseudo:
            raise BadBlock("pseudo-header fields in trailers")
    elif kind is Block.RESPONSE:
        if b":status" not in pseudo:
            raise BadBlock("a response without :status")
        if pseudo & _REQUEST_ONLY:
            raise BadBlock("request pseudo-header fields in a response")
    else:
        _check_request(pseudo, method, authority, host)


def _check_field(name: bytes, value: bytes) -> None:
    if name not in _GOOD_NAMES:
        if not name:
            raise BadBlock("a header field with an empty name")
        if _BAD_NAME.search(name) is not None or name.find(b":", 1) != -1:
            raise BadBlock(f"header field name {name!r} is not lowercase visible ASCII")
        if len(_GOOD_NAMES) < _GOOD_NAMES_KEPT:
            _GOOD_NAMES.add(name)
    if value and (
        b"\r" in value or b"\n" in value or b"\0" in value
        or value[0] in _WHITESPACE or value[-1] in _WHITESPACE
    ):  # fmt: skip
        raise BadBlock(f"header field {name!r}: bad characters or surrounding whitespace")


def _check_request(
    pseudo: set[bytes], method: bytes | None, authority: bytes | None, host: bytes | None
) -> None:
    if method is None:
        raise BadBlock("a request without :method")
    connect = method == b"CONNECT"
    if connect and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise BadBlock("an ordinary CONNECT with :scheme or :path")
    elif b":scheme" not in pseudo or b":path" not in pseudo:
        raise BadBlock("a request without :scheme or :path")
    if b":status" in pseudo:
        raise BadBlock(":status in a request")
    if not connect and b":protocol" in pseudo:
        raise BadBlock(":protocol in a request that is not CONNECT")
    if authority is None and host is None:
        raise BadBlock("a request without :authority or host")
    if authority is not None and host is not None and authority != host:
        raise BadBlock(":authority and host differ")
