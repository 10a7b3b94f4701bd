"""HPACK for the waypoint's HTTP/2 codecs, memoised where header blocks repeat.

A client's requests (and a server's responses) repeat the same header block
byte for byte once HPACK's dynamic table holds their fields: gRPC sends
``:path``, ``content-type``, ``te`` and ``user-agent`` as indexes into it on
every call. Decoding such a block gives the same fields for as long as the
table is unchanged, so :class:`MemoDecoder` keeps the decoded fields of recent
blocks and forgets them all whenever the table changes (an insertion or a
size update: the table counts them). A block that changes the table is
decoded, never remembered. The ``hpack`` package does the decoding (Huffman,
dynamic table, limits); only its results are reused.

:func:`encode_fields` writes HPACK without a dynamic table or Huffman coding
(indexed static entries, else literals without indexing): valid for any
decoder and stateless, so each field's encoding is kept (bounded) and a block
is their concatenation; a whole block made only of kept fields (a gRPC
response head, its trailers) is kept too. Fields whose value is new on every
request (``x-request-id``, trace context) are never kept: they would fill the
memo and crowd out the fields that repeat.
"""

from __future__ import annotations

import hpack
from hpack.table import HeaderTable

__all__ = ["MemoDecoder", "decode_plain", "encode_fields", "encode_literal"]

MEMO_BLOCKS = 64  # decoded blocks kept per connection (between table changes)
# ... and at most this many bytes of them (block + decoded names and values): a repeated
# request head is a few hundred bytes, while a client sending distinct blocks near the
# header list size (64 KiB) would otherwise make 64 of them (~8 MiB) live as long as its
# connection.
MEMO_BYTES = 32 * 1024
MEMO_FIELDS = 4096  # encoded fields kept per process
MEMO_VALUE = 128  # longer values are encoded each time
MEMO_OUT_BLOCKS = 256  # encoded blocks kept per process
# Credentials are encoded each time, never kept beyond their request; nor are fields
# whose value is new on every request or connection (HBONE's ``forwarded: for="ip:port"``
# names the caller's ephemeral port: kept, it filled the memo, ~1.2 MB a process).
_SECRET = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_NOT_KEPT = _SECRET | {"x-request-id", "traceparent", "tracestate", "grpc-timeout",
                       "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "b3",
                       "forwarded"}  # fmt: skip


class _CountingTable(HeaderTable):
    """hpack's dynamic table, counting its changes."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class MemoDecoder:
    """An HPACK decoder (one per connection direction) that remembers recent blocks."""

    __slots__ = ("_decoder", "_kept", "_memo", "_seen", "_table")

    def __init__(self, max_header_list: int) -> None:
        self._decoder = hpack.Decoder(max_header_list)
        self._table = _CountingTable()
        self._decoder.header_table = self._table
        self._memo: dict[bytes, tuple[tuple[str, str], ...]] = {}
        self._kept = 0  # bytes in the memo (MEMO_BYTES at most)
        self._seen = 0

    def decode(self, block: bytes) -> tuple[tuple[str, str], ...]:
        """The block's fields as latin-1 text; raises hpack's errors (and ValueError,
        IndexError) for a bad block."""
        table = self._table
        if table.changes != self._seen:
            self._memo.clear()
            self._kept = 0
            self._seen = table.changes
        fields = self._memo.get(block)
        if fields is not None:
            return fields
        raw = self._decoder.decode(block, raw=True)
        fields = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in raw)
        if table.changes == self._seen and len(self._memo) < MEMO_BLOCKS:
            size = len(block) + sum(len(n) + len(v) for n, v in raw)
            if self._kept + size <= MEMO_BYTES:
                self._memo[block] = fields
                self._kept += size
        return fields


_STATIC: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC.setdefault((_n, _v), _i)
    _STATIC_NAMES.setdefault(_n, _i)
_FIELDS: dict[tuple[str, str], bytes] = {}
_BLOCKS: dict[tuple[tuple[str, str], ...], bytes] = {}


def _integer(value: int, prefix: int, first: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes(text: str | bytes) -> bytes:
    if isinstance(text, bytes):  # (tests send raw values our callers never produce)
        return text
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _field(name: str, value: str) -> bytes:
    n, v = _bytes(name), _bytes(value)
    index = _STATIC.get((n, v))
    if index is not None:
        return _integer(index, 7, 0x80)
    index = _STATIC_NAMES.get(n, 0)
    head = _integer(index, 4, 0x00)
    if not index:
        head += _integer(len(n), 7, 0x00) + n
    return head + _integer(len(v), 7, 0x00) + v


def encode_fields(headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> bytes:
    """An HPACK block: static-table indexes and literals without indexing, no Huffman."""
    key = headers if isinstance(headers, tuple) else tuple(headers)
    block = _BLOCKS.get(key)
    if block is not None:
        return block
    memo = _FIELDS
    parts = []
    kept = True  # every field of the block may be kept: so may the block
    for pair in headers:
        encoded = memo.get(pair)
        if encoded is None:
            name, value = pair
            encoded = _field(name, value)
            if len(value) <= MEMO_VALUE and name not in _NOT_KEPT:
                if len(memo) >= MEMO_FIELDS:
                    memo.clear()
                memo[pair] = encoded
            else:
                kept = False
        parts.append(encoded)
    block = b"".join(parts)
    if kept:
        if len(_BLOCKS) >= MEMO_OUT_BLOCKS:
            _BLOCKS.clear()
        _BLOCKS[key] = block
    return block


def encode_literal(name: str, value: str, *, never_indexed: bool = False) -> bytes:
    """One field as a literal without indexing (``never_indexed``: one that intermediaries
    must not index either, RFC 7541 6.2.3), never kept: for values new on every block."""
    n, v = _bytes(name), _bytes(value)
    index = _STATIC_NAMES.get(n, 0)
    head = _integer(index, 4, 0x10 if never_indexed else 0x00)
    if not index:
        head += _integer(len(n), 7, 0x00) + n
    return head + _integer(len(v), 7, 0x00) + v


_STATIC_RAW: list[tuple[bytes, bytes]] = [(n, v) for n, v in HeaderTable.STATIC_TABLE]


def _prefixed(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 5.1) whose prefix is in ``block[pos]``: (value, next pos);
    (-1, pos) if it does not end within the block or four more bytes."""
    limit = (1 << prefix) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    stop = min(pos + 4, len(block))
    while pos < stop:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    return -1, pos


def decode_plain(block: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of a block that needs no decoder state: static-table indexes and literals
    without indexing (or never indexed), no Huffman coding - what :func:`encode_fields`
    writes. None for any other block (a dynamic table reference or insertion, a table size
    update, Huffman, or a malformed one): decode it with the connection's decoder, whose
    table this function never touches, so the two stay in step."""
    out: list[tuple[bytes, bytes]] = []
    static = _STATIC_RAW
    pos, end = 0, len(block)
    while pos < end:
        first = block[pos]
        if first & 0x80:  # indexed field
            index, pos = _prefixed(block, pos, 7)
            if not 0 < index <= len(static):
                return None
            out.append(static[index - 1])
            continue
        if first & 0x60:  # literal with incremental indexing, or a table size update
            return None
        index, pos = _prefixed(block, pos, 4)
        if index < 0 or index > len(static):
            return None
        if index:
            name = static[index - 1][0]
        else:
            if pos >= end or block[pos] & 0x80:  # Huffman-coded name
                return None
            size, pos = _prefixed(block, pos, 7)
            if size < 0 or pos + size > end:
                return None
            name, pos = block[pos : pos + size], pos + size
        if pos >= end or block[pos] & 0x80:  # Huffman-coded value
            return None
        size, pos = _prefixed(block, pos, 7)
        if size < 0 or pos + size > end:
            return None
        out.append((name, block[pos : pos + size]))
        pos += size
    return out
