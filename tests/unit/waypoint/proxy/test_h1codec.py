"""The waypoint's HTTP/1.1 codec: valid and hostile heads, chunked bodies, serialization.

Valid requests are checked against h11 (a parser we did not write): same
method, target, fields and framing. Hostile inputs must be refused with the
right status. A hypothesis property checks that whatever ``h1codec``
accepts, h11 accepts the same way (the fast path is never more lenient).
"""

from __future__ import annotations

import time

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.waypoint.proxy.h1codec import (
    MAX_HEAD,
    ChunkedDecoder,
    Framing,
    ParseError,
    chunk,
    find_head_end,
    parse_request_head,
    parse_response_head,
    request_head_bytes,
    response_head_bytes,
)


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    end = find_head_end(raw)
    assert end > 0, raw
    return parse_request_head(raw, end)


def h11_request(raw: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    return event


VALID = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p?q=1&r=%20 HTTP/1.1\r\nhost: a:80\r\nAccept: */*\r\nUser-Agent: curl/8\r\n\r\n",
    b"POST /api HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n",
    b"POST /api HTTP/1.1\r\nhost: a\r\nContent-Length: 5, 5\r\n\r\n",
    b"POST /api HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\nx-empty:\r\nx-ows: \t padded \t \r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\nx-inner: a  b\tc\r\nx-obs-text: caf\xe9\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\ncookie: a=1\r\ncookie: b=2\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, close\r\n\r\n",
]


@pytest.mark.parametrize("raw", VALID)
def test_valid_requests_parse_as_h11_does(raw: bytes) -> None:
    ours = parse(raw)
    theirs = h11_request(raw)
    assert ours.method == theirs.method.decode()
    assert ours.target == theirs.target.decode()
    assert ours.size == len(raw)
    # h11 folds equal Content-Length values into one and lower-cases Transfer-Encoding.
    expected = [(k.decode(), v.decode("latin-1")) for k, v in theirs.headers]
    ignore = {"content-length", "transfer-encoding"}
    assert [h for h in ours.headers if h[0] not in ignore] == [
        h for h in expected if h[0] not in ignore
    ]
    lengths = [v for k, v in expected if k == "content-length"]
    if any(k == "transfer-encoding" for k, _ in expected):
        assert ours.framing is Framing.CHUNKED
    elif lengths:
        assert (ours.framing, ours.length) == (Framing.LENGTH, int(lengths[0]))
    else:
        assert ours.framing is Framing.NONE
    assert not ours.expect_continue


def test_keep_alive_host_http10_and_expect() -> None:
    assert parse(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n").keep_alive
    assert not parse(b"GET / HTTP/1.1\r\nhost: h\r\nConnection: Close\r\n\r\n").keep_alive
    assert parse(b"GET / HTTP/1.1\r\nhost: h:8\r\n\r\n").host == "h:8"
    http10 = parse(b"GET / HTTP/1.0\r\nhost: h\r\nconnection: keep-alive\r\n\r\n")
    assert http10.version == "1.0" and not http10.keep_alive and http10.host == "h"
    expect = b"POST / HTTP/1.%d\r\nhost: h\r\nexpect: 100-Continue\r\ncontent-length: 1\r\n\r\n"
    assert parse(expect % 1).expect_continue
    assert not parse(expect % 0).expect_continue  # RFC 9110 10.1.1: ignored in HTTP/1.0
    assert not parse(b"GET / HTTP/1.1\r\nhost: h\r\nexpect: something\r\n\r\n").expect_continue
    upgrade = parse(
        b"GET / HTTP/1.1\r\nhost: h\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    assert upgrade.upgrade == "websocket"
    upgrade10 = parse(
        b"GET / HTTP/1.0\r\nhost: h\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    assert upgrade10.upgrade is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (b"connection: upgrade\r\nupgrade: websocket\r\n", "websocket"),
        (b"connection: keep-alive, Upgrade\r\nupgrade: WebSocket\r\n", "WebSocket"),
        (b"upgrade: websocket\r\n", None),  # not listed in Connection: not an upgrade
        (b"connection: upgrade\r\n", None),
        (
            b"connection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n",
            None,
        ),  # h2c upgrade ignored, as Envoy
    ],
)
def test_upgrade_requests(fields: bytes, expected: str | None) -> None:
    parsed = parse(b"GET / HTTP/1.1\r\nhost: h\r\n" + fields + b"\r\n")
    assert parsed.upgrade == expected
    assert parse(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n").framing is Framing.NONE


HOSTILE = [
    # request line
    (b"GET  / HTTP/1.1\r\nhost: a\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1 \r\nhost: a\r\n\r\n", 400, "request line"),
    (b"GET / http/1.1\r\nhost: a\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/2.0\r\nhost: a\r\n\r\n", 400, "request line"),
    (b"GET /\x7f HTTP/1.1\r\nhost: a\r\n\r\n", 400, "request line"),
    (b"GET /a b HTTP/1.1\r\nhost: a\r\n\r\n", 400, "request line"),
    (b"G(T / HTTP/1.1\r\nhost: a\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1\nhost: a\r\n\r\n", 400, "request line"),  # bare LF
    # fields
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: 1\r\n folded\r\n\r\n", 400, "obsolete line folding"),
    (b"GET / HTTP/1.1\r\nhost: a\r\nx : 1\r\n\r\n", 400, "malformed header"),
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: a\rb\r\n\r\n", 400, "malformed header"),  # bare CR
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: a\nb: c\r\n\r\n", 400, "malformed header"),  # bare LF
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: a\x00b\r\n\r\n", 400, "malformed header"),
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: \x01\r\n\r\n", 400, "malformed header"),
    (b"GET / HTTP/1.1\r\nhost: a\r\nx\x7f: 1\r\n\r\n", 400, "malformed header"),
    (b"GET / HTTP/1.1\r\nhost: a\r\n: 1\r\n\r\n", 400, "malformed header"),
    (b"GET / HTTP/1.1\r\nhost: a\r\nno-colon\r\n\r\n", 400, "malformed header"),
    # framing: request smuggling and friends
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
     400, "smuggling"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n",
     400, "smuggling"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n", 400,
     "conflicting Content-Length"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5, 6\r\n\r\n", 400, "conflicting"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +5\r\n\r\n", 400, "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n", 400, "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0x10\r\n\r\n", 400, "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: " + b"9" * 21 + b"\r\n\r\n", 400,
     "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 501,
     "Transfer-Encoding"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked"
     b"\r\n\r\n", 501, "multiple Transfer-Encoding"),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: xchunked\r\n\r\n", 501, "Transfer"),
    # Host
    (b"GET / HTTP/1.1\r\nx: 1\r\n\r\n", 400, "missing Host"),
    (b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 400, "multiple Host"),
    # HTTP/1.0 and Expect on the same codec (they once went to h11, which took these)
    (b"GET / HTTP/1.0\r\n\r\n", 400, "missing Host"),
    (b"POST / HTTP/1.0\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
    (b"POST / HTTP/1.0\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
     400, "smuggling"),
    (b"POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\n"
     b"transfer-encoding: chunked\r\n\r\n", 400, "smuggling"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "reason"), HOSTILE)
def test_hostile_requests_are_refused(raw: bytes, status: int, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(raw)
    assert caught.value.status == status
    assert reason in str(caught.value)


def test_no_quadratic_backtracking_on_hostile_heads() -> None:
    bad = [
        b"GET / HTTP/1.1\r\nhost: a\r\nx:" + b" " * 60000 + b"\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nx: " + b"a " * 30000 + b"\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\n" + b"x: 1\r\n" * 10000 + b"y\r\n\r\n",
        b"GET /" + b"a" * 60000 + b" HTTP/1.2\r\n\r\n",
    ]
    for raw in bad:
        assert len(raw) <= MAX_HEAD + 100
        start = time.perf_counter()
        with pytest.raises(ParseError):
            parse(raw)
        assert time.perf_counter() - start < 0.5, raw[:40]


# -- responses ---------------------------------------------------------------------------


def response(raw: bytes, method: str = "GET"):  # type: ignore[no-untyped-def]
    return parse_response_head(raw, find_head_end(raw), method)


def test_response_framing() -> None:
    r = response(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n")
    assert (r.status, r.framing, r.length, r.keep_alive) == (200, Framing.LENGTH, 3, True)
    assert response(b"HTTP/1.1 200\r\ntransfer-encoding: chunked\r\n\r\n").framing is (
        Framing.CHUNKED
    )
    close = response(b"HTTP/1.1 200 OK\r\n\r\n")
    assert close.framing is Framing.CLOSE and not close.keep_alive
    assert response(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", "HEAD").framing is (
        Framing.NONE
    )
    for code in (b"204", b"304", b"100"):
        assert response(b"HTTP/1.1 " + code + b" X\r\n\r\n").framing is Framing.NONE
    assert not response(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive
    assert not response(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    ).keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx: \x00\r\n\r\n",
        b"HTTP/1.1 200 OK\nx: 1\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
    ],
)
def test_hostile_responses_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        response(raw)
    assert caught.value.status == 502


# -- chunked bodies ------------------------------------------------------------------------


def decode_all(data: bytes, step: int) -> tuple[bytes, int]:
    """Feed ``data`` ``step`` bytes at a time; (decoded body, bytes of input used)."""
    decoder = ChunkedDecoder()
    buffer, out, fed, used_total = b"", [], 0, 0
    while True:
        progressed = True
        while progressed and not decoder.done:
            piece, used = decoder.decode(buffer)
            buffer = buffer[used:]
            used_total += used
            out.append(piece)
            progressed = bool(used or piece)
        if decoder.done:
            break
        assert fed < len(data), "decoder wants more than the message"
        buffer += data[fed : fed + step]
        fed += step
    return b"".join(out), used_total


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_chunked_decoding_across_every_split(step: int) -> None:
    body = b"5\r\nhello\r\n1;name=value\r\n \r\nA \r\n0123456789\r\n0\r\ntrailer-field: x\r\n\r\n"
    decoded, used = decode_all(body + b"NEXT", step)
    assert decoded == b"hello 0123456789"
    assert used == len(body)  # the next message's bytes are left alone


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"5\r\nhelloXX", "not followed by CRLF"),
        (b"5\r\nhello\n0\r\n", "not followed by CRLF"),
        (b"0x5\r\nhello\r\n", "chunk-size"),
        (b"-5\r\n", "chunk-size"),
        (b"\r\n", "chunk-size"),
        (b"5\n\r\nhello\r\n", "chunk-size"),  # bare LF in the size line
        (b"5;a\x00b\r\nhello\r\n", "chunk-size"),
        (b"1" * 17 + b"\r\n", "chunk-size"),
        (b"F" * 5000, "too long"),
        (b"0\r\nbad trailer\r\n\r\n", "trailer"),
        (b"0\r\nx: 1\r\n folded\r\n\r\n", "trailer"),
    ],
)
def test_hostile_chunked_bodies_are_refused(raw: bytes, reason: str) -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(ParseError, match=reason):
        buffer = raw
        while True:
            piece, used = decoder.decode(buffer)
            buffer = buffer[used:]
            if not used and not piece:
                break


def test_chunk_encoding_round_trips() -> None:
    encoded = chunk(b"abc") + chunk(b"x" * 300) + b"0\r\n\r\n"
    assert decode_all(encoded, 5)[0] == b"abc" + b"x" * 300


# -- serialization ----------------------------------------------------------------------------


def test_serialized_heads_parse_back() -> None:
    raw = request_head_bytes("POST", "/a?b=c", (("host", "h"), ("content-length", "2")))
    parsed = parse(raw)
    assert (parsed.method, parsed.target, parsed.length) == ("POST", "/a?b=c", 2)
    assert h11_request(raw).target == b"/a?b=c"
    head = response_head_bytes(404, (("content-length", "0"),))
    assert head == b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    assert response(head).status == 404


@pytest.mark.parametrize(
    "headers",
    [
        (("x", "a\r\nset-cookie: stolen"),),  # header injection through a value
        (("x", "a\nb"),),
        (("x", "a\rb"),),
        (("x: y", "z"),),  # a name carrying a colon
        (("x y", "z"),),
        (("", "z"),),
        (("x", "\x00"),),
        (("x", "caf\u00e9\u20ac"),),  # not representable in latin-1
    ],
)
def test_serializer_refuses_malformed_fields(headers: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(ParseError) as caught:
        response_head_bytes(200, headers)
    assert caught.value.status == 500
    with pytest.raises(ParseError):
        request_head_bytes("GET", "/", (("host", "h"), *headers))


def test_serializer_refuses_a_malformed_request_line() -> None:
    for method, target in (("GET", "/a b"), ("GET", "/\r\nx: y"), ("G T", "/"), ("GET", "")):
        with pytest.raises(ParseError):
            request_head_bytes(method, target, (("host", "h"),))


# -- differential against h11 ------------------------------------------------------------------

TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                min_size=1, max_size=12)  # fmt: skip
VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=20,
).map(str.strip)
TARGET = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                 max_size=30)  # fmt: skip
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(TOKEN)
    target = "/" + draw(TARGET)
    fields = draw(
        st.lists(st.tuples(TOKEN, VALUE).filter(lambda f: f[0].lower() not in FRAMING), max_size=6)
    )
    body = draw(st.sampled_from(["", "content-length: 12\r\n", "transfer-encoding: chunked\r\n"]))
    lines = "".join(f"{name}:{draw(st.sampled_from(['', ' ', '  ']))}{value}\r\n"
                    for name, value in fields)  # fmt: skip
    return f"{method} {target} HTTP/1.1\r\nhost: h\r\n{lines}{body}\r\n".encode("latin-1")


@settings(max_examples=300, deadline=None)
@given(requests())
def test_differential_valid_requests(raw: bytes) -> None:
    ours = parse(raw)
    theirs = h11_request(raw)
    assert (ours.method, ours.target) == (theirs.method.decode(), theirs.target.decode())
    assert list(ours.headers) == [(k.decode(), v.decode("latin-1")) for k, v in theirs.headers]


MUTATIONS = st.sampled_from([b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\r\n", b"\r\n ", b"\x7f",
                             b"\xff", b",", b";", b"\x0b"])  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(requests(), st.lists(st.tuples(st.integers(0, 10_000), MUTATIONS), min_size=1, max_size=3))
def test_differential_never_more_lenient_than_h11(
    raw: bytes, edits: list[tuple[int, bytes]]
) -> None:
    """Insert stray bytes anywhere: if h1codec accepts the head, h11 accepts it identically."""
    for position, insert in edits:
        at = position % (len(raw) - 3)  # keep the final blank line
        raw = raw[:at] + insert + raw[at:]
    end = find_head_end(raw)
    if end < 0:
        return
    try:
        ours = parse_request_head(raw, end)
    except ParseError:
        return
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw[:end])
    try:
        theirs = conn.next_event()
    except h11.RemoteProtocolError as exc:
        pytest.fail(f"h1codec accepted what h11 refuses ({exc}): {raw!r}")
    assert isinstance(theirs, h11.Request), (theirs, raw)
    assert (ours.method, ours.target) == (theirs.method.decode(), theirs.target.decode())
    ignore = {"content-length", "transfer-encoding"}
    assert [h for h in ours.headers if h[0] not in ignore] == [
        (k.decode(), v.decode("latin-1")) for k, v in theirs.headers if k.decode() not in ignore
    ]
