"""The waypoint's one HTTP/1.x message codec: strict, sans-io (no h11).

Every HTTP/1.x request the waypoint serves, and every response it reads from
an HTTP/1.1 upstream, goes through it (h11 cost about a third of the
waypoint's CPU at 1,000 req/s, and a second codec disagreed with this one on
what to refuse). Each head is parsed with a handful of C-level regex calls:

- :func:`parse_request_head` / :func:`parse_response_head`: the whole head
  is validated with one ``fullmatch`` (request or status line, then header
  lines) and split with one ``findall``; then the framing is decided.
- :class:`ChunkedDecoder`: ``Transfer-Encoding: chunked`` bodies, streamed
  chunk by chunk (never buffered whole).
- :func:`request_head_bytes` / :func:`response_head_bytes`: serialization,
  checked against the same grammar so that nothing configured or relayed can
  inject a header line.

Strictness (what is refused, and how), following RFC 9112 and Envoy's
defaults for a proxy:

- anything that does not match the grammar: a request or status line with
  extra or missing spaces, a method or header name that is not a token, a
  target with controls or spaces, a field value with CR, LF, NUL or other
  controls (bare CR, bare LF), whitespace between a field name and its colon,
  obs-fold (a line starting with SP/HTAB), a head not ending in CRLF CRLF:
  :class:`ParseError` 400;
- a head larger than ``MAX_HEAD`` (64 KiB, Envoy's default ``max_request_headers_kb``
  is 60): 431;
- ``Content-Length`` that is not ASCII digits, or several differing values (a
  comma list of equal values is accepted, as RFC 9110 8.6 allows): 400. Only
  SP and HTAB count as whitespace around a value (``fieldtext``): ``\xa0 5``
  is not ``5``;
- ``Transfer-Encoding`` together with ``Content-Length`` (request smuggling;
  Envoy refuses it unless ``allow_chunked_length``): 400;
- ``Transfer-Encoding`` other than exactly ``chunked`` (gzip, chunked, or a
  repeated field): 501, as h11;
- requests without exactly one ``Host`` (HTTP/1.0 included: the waypoint routes
  by it): 400;
- ``Transfer-Encoding`` in an HTTP/1.0 request (RFC 9112 6.1: its framing is
  faulty): 400;
- malformed chunk sizes, chunk extensions with controls, data not followed by
  CRLF, oversized chunk-size or trailer sections: 400.

HTTP/1.0 requests are served, never kept alive (as h11 did; Envoy refuses them
unless ``accept_http_10``), and answered with an HTTP/1.1 status line and no
chunked coding. ``Expect: 100-continue`` on an HTTP/1.1 request sets
:attr:`ParsedRequest.expect_continue` (RFC 9110 10.1.1: ignored in HTTP/1.0; other
expectations are ignored, and ``Expect`` is never forwarded). An upgrade request (``Upgrade`` listed in ``Connection``,
RFC 9110 7.8) is parsed here: :attr:`ParsedRequest.upgrade` is the protocol
asked for (``websocket``), except ``h2c``, which is ignored as Envoy does (the
request is served as HTTP/1.1; its ``Upgrade`` and ``HTTP2-Settings`` are
hop-by-hop and dropped).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from http import HTTPStatus
from operator import itemgetter

from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.fieldtext import decimal, strip_ows

__all__ = [
    "MAX_HEAD",
    "ChunkedDecoder",
    "Framing",
    "ParseError",
    "ParsedRequest",
    "ParsedResponse",
    "chunk",
    "find_head_end",
    "parse_request_head",
    "parse_response_head",
    "request_head_bytes",
    "response_head_bytes",
]

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions
CONTENT_LENGTH_MAX_DIGITS = 20  # as h11
LAST_CHUNK = b"0\r\n\r\n"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VCHAR = r"[\x21-\x7e\x80-\xff]"
# A field value: visible characters and obs-text, inner SP/HTAB; no controls at all.
# (The optional value owns its trailing whitespace so that a run of blanks has one parse:
# no quadratic backtracking on hostile input.)
_FIELD = rf"({_TOKEN}):[ \t]*(?:({_VCHAR}+(?:[ \t]+{_VCHAR}+)*)[ \t]*)?\r\n"
_FIELDS = re.compile(_FIELD)
_REQUEST = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/1\.([01])\r\n(?:{_FIELD})*\r\n")
_RESPONSE = re.compile(
    rf"HTTP/1\.([01]) ([0-9]{{3}})(?: ([\t \x21-\x7e\x80-\xff]*))?\r\n(?:{_FIELD})*\r\n"
)
_CHUNK_LINE = re.compile(r"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t \x21-\x7e\x80-\xff]*)?")


class ParseError(Exception):
    """A message the waypoint refuses; ``status`` is what a server answers (400, 431, 501)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Framing(enum.Enum):
    """How a message's body is delimited (RFC 9112 6.3)."""

    NONE = "none"  # no body
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # responses only: until the connection closes


@dataclass(slots=True)
class ParsedRequest:
    """A parsed request head; shared by the requests whose heads are the same bytes
    (``h1wire.MessageReader.request_head``): never changed once made."""

    method: str
    target: str
    version: str  # "1.1" or "1.0"
    headers: Headers  # lower-case names, in order, framing fields included
    host: str | None
    framing: Framing
    length: int  # Content-Length (0 unless LENGTH)
    keep_alive: bool  # HTTP/1.1 without "Connection: close"
    expect_continue: bool  # HTTP/1.1 with "Expect: 100-continue"
    size: int  # bytes of the head, CRLF CRLF included
    upgrade: str | None = None  # the protocol of an upgrade request (not h2c)


@dataclass(slots=True)
class ParsedResponse:
    """A parsed response head; shared as :class:`ParsedRequest` is."""

    status: int
    version: str
    headers: Headers
    framing: Framing
    length: int
    keep_alive: bool
    size: int


def find_head_end(buffer: bytes, start: int = 0) -> int:
    """The offset just past the head's CRLF CRLF, or -1; ``start``: where the search may begin."""
    end = buffer.find(b"\r\n\r\n", start)
    return end + 4 if end >= 0 else -1


def _framing(
    headers: Headers, *, request: bool
) -> tuple[Framing, int, bool, str | None, int, bool, str | None]:
    """(framing, length, connection close, host, host count, 100-continue expected,
    upgrade asked for)."""
    length: str | None = None
    chunked = False
    close = False
    host: str | None = None
    hosts = 0
    expect_continue = False
    upgrade: str | None = None
    connection_upgrade = False
    for name, value in headers:
        if name == "content-length":
            values = {strip_ows(v) for v in value.split(",")}
            if len(values) != 1:
                raise ParseError("conflicting Content-Length values")
            (single,) = values
            if decimal(single, CONTENT_LENGTH_MAX_DIGITS) is None:
                raise ParseError(f"bad Content-Length {value!r}")
            if length is not None and length != single:
                raise ParseError("conflicting Content-Length headers")
            length = single
        elif name == "transfer-encoding":
            if chunked:
                raise ParseError("multiple Transfer-Encoding headers", 501)
            if value.lower() != "chunked":
                raise ParseError(f"unsupported Transfer-Encoding {value!r}", 501)
            chunked = True
        elif name == "host":
            host = value
            hosts += 1
        elif name == "connection":
            tokens = [strip_ows(t).lower() for t in value.split(",")]
            close = close or "close" in tokens
            connection_upgrade = connection_upgrade or "upgrade" in tokens
        elif name == "expect" and request:
            expect_continue = expect_continue or strip_ows(value).lower() == "100-continue"
        elif name == "upgrade" and request:
            upgrade = value.strip()
    if chunked and length is not None:
        raise ParseError("both Transfer-Encoding and Content-Length (request smuggling)")
    if not connection_upgrade or (upgrade is not None and upgrade.lower() == "h2c"):
        upgrade = None
    if chunked:
        return Framing.CHUNKED, 0, close, host, hosts, expect_continue, upgrade
    if length is not None:
        size = int(length)
        framing = Framing.LENGTH if size else Framing.NONE
        return framing, size, close, host, hosts, expect_continue, upgrade
    return Framing.NONE, 0, close, host, hosts, expect_continue, upgrade


def parse_request_head(buffer: bytes, end: int) -> ParsedRequest:
    """Parse ``buffer[:end]`` (``end`` from :func:`find_head_end`); raises :class:`ParseError`."""
    text = buffer[:end].decode("latin-1")
    match = _REQUEST.fullmatch(text)
    if match is None:
        raise ParseError(_what_is_wrong(text, request=True))
    method, target, minor = match.group(1, 2, 3)
    line_end = text.index("\r\n") + 2
    headers = tuple((name.lower(), value) for name, value in _FIELDS.findall(text, line_end))
    framing, length, close, host, hosts, expect_continue, upgrade = _framing(headers, request=True)
    version = "1." + minor
    if hosts != 1:
        raise ParseError("missing Host header" if not hosts else "multiple Host headers")
    if version == "1.0" and framing is Framing.CHUNKED:
        raise ParseError("Transfer-Encoding in an HTTP/1.0 request")
    return ParsedRequest(
        method=method,
        target=target,
        version=version,
        headers=headers,
        host=host,
        framing=framing,
        length=length,
        keep_alive=version == "1.1" and not close,
        expect_continue=expect_continue and version == "1.1",
        size=end,
        upgrade=upgrade if version == "1.1" else None,
    )


def parse_response_head(buffer: bytes, end: int, method: str) -> ParsedResponse:
    """Parse a response head answering ``method``; raises :class:`ParseError`."""
    text = buffer[:end].decode("latin-1")
    match = _RESPONSE.fullmatch(text)
    if match is None:
        raise ParseError(_what_is_wrong(text, request=False), 502)
    minor, code = match.group(1, 2)
    status = int(code)
    if status < 100:
        raise ParseError(f"bad status code {status}", 502)
    line_end = text.index("\r\n") + 2
    headers = tuple((name.lower(), value) for name, value in _FIELDS.findall(text, line_end))
    try:
        framing, length, close, _, _, _, _ = _framing(headers, request=False)
    except ParseError as exc:
        raise ParseError(str(exc), 502) from None
    keep_alive = minor == "1" and not close
    if method == "HEAD" or status < 200 or status in (204, 304):
        framing, length = Framing.NONE, 0
    elif framing is Framing.NONE and not any(name == "content-length" for name, _ in headers):
        framing, keep_alive = Framing.CLOSE, False
    return ParsedResponse(status, "1." + minor, headers, framing, length, keep_alive, end)


def _what_is_wrong(text: str, *, request: bool) -> str:
    """A short reason for a head that failed the grammar (for the 400 and the access log)."""
    first, _, rest = text.partition("\r\n")
    line = re.compile(
        r"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [\x21-\x7e]+ HTTP/1\.[01]"
        if request
        else r"HTTP/1\.[01] [0-9]{3}(?: [\t \x21-\x7e\x80-\xff]*)?"
    )
    if not line.fullmatch(first):
        kind = "request line" if request else "status line"
        return f"malformed {kind} {first[:80]!r}"
    for field in rest.split("\r\n"):
        if not field:
            break
        if field[0] in " \t":
            return f"obsolete line folding in header {field[:80]!r}"
        if not _FIELDS.fullmatch(field + "\r\n"):
            return f"malformed header {field[:80]!r}"
    return "malformed header section"


# -- chunked bodies ------------------------------------------------------------------------


class ChunkedDecoder:
    """Decodes ``Transfer-Encoding: chunked`` incrementally; trailers are checked and dropped.

    :meth:`decode` takes the buffered input and returns (data, bytes consumed);
    ``done`` turns True after the last chunk and trailer section.
    """

    __slots__ = ("_remaining", "_state", "_trailer_bytes", "done")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._trailer_bytes = 0
        self.done = False

    def decode(self, buffer: bytes) -> tuple[bytes, int]:
        """Decode from ``buffer``: (body bytes, how many input bytes were used).

        Returns ``(b"", 0)`` when more input is needed. Raises :class:`ParseError`.
        """
        pos = 0
        n = len(buffer)
        while not self.done:
            state = self._state
            if state == self._DATA:
                if pos >= n:
                    return b"", pos
                take = min(self._remaining, n - pos)
                data = buffer[pos : pos + take]
                self._remaining -= take
                if not self._remaining:
                    self._state = self._DATA_END
                return data, pos + take
            if state == self._DATA_END:
                if n - pos < 2:
                    return b"", pos
                if buffer[pos : pos + 2] != b"\r\n":
                    raise ParseError("chunk data not followed by CRLF")
                pos += 2
                self._state = self._SIZE
                continue
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                if state == self._SIZE and n - pos > MAX_CHUNK_LINE:
                    raise ParseError("chunk-size line too long")
                if state == self._TRAILER and self._trailer_bytes + n - pos > MAX_HEAD:
                    raise ParseError("trailer section too large", 431)
                return b"", pos
            line = buffer[pos:eol].decode("latin-1")
            if state == self._SIZE:
                if eol - pos > MAX_CHUNK_LINE:
                    raise ParseError("chunk-size line too long")
                match = _CHUNK_LINE.fullmatch(line)
                if match is None:
                    raise ParseError(f"malformed chunk-size line {line[:40]!r}")
                self._remaining = int(match.group(1), 16)
                self._state = self._DATA if self._remaining else self._TRAILER
            else:  # a trailer field, or the empty line that ends the message
                self._trailer_bytes += eol + 2 - pos
                if self._trailer_bytes > MAX_HEAD:
                    raise ParseError("trailer section too large", 431)
                if line and not _FIELDS.fullmatch(line + "\r\n"):
                    raise ParseError(f"malformed trailer field {line[:40]!r}")
                if not line:
                    self.done = True
            pos = eol + 2
        return b"", pos


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` must not be empty)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


# -- serialization -------------------------------------------------------------------------

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_HEAD_OUT = re.compile(rf"(?:{_FIELD})*")


def _checked(first_line: str, headers: Headers, what: str) -> bytes:
    """The head's bytes, if its fields are exactly ``headers``, one well-formed line each.

    The grammar alone would accept a value carrying CRLF plus another field, or
    a name carrying a colon; the line count and the colon check refuse those.
    (Joined and checked in C: no Python-level step per field.)
    """
    fields = "\r\n".join(map(": ".join, headers)) + "\r\n" if headers else ""
    if (
        not _HEAD_OUT.fullmatch(fields)
        or fields.count("\n") != len(headers)
        or ":" in " ".join(map(_NAME, headers))
    ):
        raise ParseError(f"refusing to send a malformed {what} header: {fields[:200]!r}", 500)
    try:
        return (first_line + fields + "\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise ParseError(f"{what} header with a non-latin-1 character", 500) from None


_NAME = itemgetter(0)


def request_head_bytes(method: str, target: str, headers: Headers) -> bytes:
    """An HTTP/1.1 request head; raises :class:`ParseError` (500) if a field would be malformed."""
    first = f"{method} {target} HTTP/1.1\r\n"
    if not _REQUEST_LINE_OUT.fullmatch(first):
        raise ParseError(f"refusing to send a malformed request line {first[:200]!r}", 500)
    return _checked(first, headers, "request")


_REQUEST_LINE_OUT = re.compile(rf"{_TOKEN} [\x21-\x7e]+ HTTP/1\.1\r\n")


def response_head_bytes(status: int, headers: Headers) -> bytes:
    """An HTTP/1.1 response head; raises :class:`ParseError` (500) if a field would be malformed."""
    if not 100 <= status <= 999:
        raise ParseError(f"refusing to send status {status}", 500)
    first = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
    return _checked(first, headers, "response")
