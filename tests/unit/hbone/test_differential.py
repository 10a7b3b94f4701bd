"""Differential: our HBONE core against h2's ``H2Connection`` on the same random frames.

The same sequences of frames, valid and invalid (CONNECTs good and bad, trailers,
DATA, RST_STREAM, WINDOW_UPDATE, PRIORITY, PING, SETTINGS, GOAWAY, PUSH_PROMISE,
CONTINUATION in and out of place, unknown types), and of the application's answers
and resets, go to our server (``HboneConnection``) and to an h2 server configured as
HBONE's was when it ran on h2 (ztunnel's settings, applied at once; h2's own header
validation, which ``fields.check_block`` matches). After each step the verdicts must
be the same: which streams opened, were refused (400), ended, carried how many bytes,
were reset by the peer or by the protocol (with which code), which RST_STREAM frames
went out, and whether the connection failed (with which code).

Where we differ on purpose, the h2 side's verdict is normalised (``_Reference``,
``_same_codes``) or the comparison stops at that step once our verdict is asserted
(``_deliberate``, where each case names the RFC 9113 section we follow):

- DATA or HEADERS on a stream *we* reset: h2 answers RST_STREAM(STREAM_CLOSED), we
  ignore the frame (5.1: "An endpoint MUST ignore frames that it receives on closed
  streams after it has sent a RST_STREAM frame").
- A field block that does not decode: COMPRESSION_ERROR for us (4.3), PROTOCOL_ERROR
  for h2; HEADERS on a stream both sides ended: STREAM_CLOSED for us (5.1), sometimes
  PROTOCOL_ERROR for h2; HEADERS on a reset stream (h2 may take it for a new request).
- A stream depending on itself, a WINDOW_UPDATE of 0 on a stream: stream errors for
  us, connection errors for h2; RST_STREAM on an idle stream: a connection error for
  us, ignored by h2; a stray CONTINUATION: PROTOCOL_ERROR for us; after the peer's
  GOAWAY h2 takes no frame, we keep its streams; a setting named twice in one frame.
- h2 does not require SETTINGS as the client's first frame; we do (3.4): every
  sequence here starts with SETTINGS, so that rule is not compared.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.hbone import events as ev
from ambient.hbone.messages import BadRequest, ConnectRequest, Status
from ambient.hbone.protocol import HboneConnection, HboneSettings, Side
from ambient.http2.hpackmemo import encode_fields

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x4, 0x8, 0x20
PROTOCOL_ERROR, STREAM_CLOSED = 1, 5
MAX_STREAMS = 3
KiB = 1024
MiB = 1024 * KiB
HBONE = HboneSettings(max_concurrent_streams=MAX_STREAMS, stream_window=64 * KiB)

Verdict = tuple[object, ...]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


def parse(wire: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos + 9 <= len(wire):
        length = int.from_bytes(wire[pos : pos + 3], "big")
        out.append((wire[pos + 3], wire[pos + 4], int.from_bytes(wire[pos + 5 : pos + 9], "big"),
                    wire[pos + 9 : pos + 9 + length]))  # fmt: skip
        pos += 9 + length
    return out


def sent_verdicts(wire: bytes) -> list[Verdict]:
    """What a side wrote that the comparison looks at: RST_STREAM and GOAWAY codes."""
    out: list[Verdict] = []
    for kind, _, stream_id, payload in parse(wire):
        if kind == RST_STREAM:
            out.append(("rst-sent", stream_id, int.from_bytes(payload[:4], "big")))
        elif kind == GOAWAY:
            out.append(("goaway-sent", int.from_bytes(payload[4:8], "big")))
    return out


# -- the two servers ------------------------------------------------------------------------


class _Ours:
    def __init__(self) -> None:
        self.conn = HboneConnection(Side.SERVER, HBONE)
        self.conn.initiate()
        self.conn.data_to_send()
        self.dead = False

    def feed(self, data: bytes) -> list[Verdict]:
        out: list[Verdict] = []
        for event in self.conn.receive_data(data):
            if isinstance(event, ev.ConnectReceived):
                out.append(("open", event.stream_id))
            elif isinstance(event, ev.ConnectRejected):
                out.append(("rejected", event.stream_id))
            elif isinstance(event, ev.DataReceived):
                out.append(("data", event.stream_id, len(event.data)))
                self.conn.consumed(event.stream_id, len(event.data))
            elif isinstance(event, ev.StreamEnded):
                out.append(("end", event.stream_id))
            elif isinstance(event, ev.StreamReset):
                out.append(("reset", event.stream_id, event.error_code))
            elif isinstance(event, ev.ConnectionFailed):
                self.dead = True
            elif isinstance(event, ev.GoAwayReceived):
                out.append(("goaway", event.last_stream_id, event.error_code))
            elif isinstance(event, ev.PingAcknowledged):
                out.append(("ping-ack",))
        return out + self._sent()

    def step(self, step: bytes | tuple[object, ...]) -> list[Verdict]:
        if isinstance(step, bytes):
            return self.feed(step)
        if step[0] == "respond":
            return self.respond(step[1], step[2])  # type: ignore[arg-type]
        return self.reset(step[1])  # type: ignore[arg-type]

    def respond(self, stream_id: int, status: int) -> list[Verdict]:
        self.conn.respond(stream_id, status)
        return self._sent()

    def reset(self, stream_id: int) -> list[Verdict]:
        self.conn.reset(stream_id)
        return self._sent()

    def _sent(self) -> list[Verdict]:
        return sent_verdicts(self.conn.data_to_send())


@dataclass
class _Reference:
    """h2 as HBONE ran it, with the HBONE layer on top that ``protocol.py`` had."""

    h2: h2.connection.H2Connection = field(init=False)
    open: set[int] = field(default_factory=set)  # as HboneConnection counts them
    remote_ended: set[int] = field(default_factory=set)
    reset_by_us: set[int] = field(default_factory=set)
    answered: set[int] = field(default_factory=set)
    dead: bool = False

    def __post_init__(self) -> None:
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True,
            normalize_inbound_headers=False, validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )  # fmt: skip
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        codes = h2.settings.SettingCodes
        self.h2.update_settings({
            codes.INITIAL_WINDOW_SIZE: HBONE.stream_window, codes.MAX_FRAME_SIZE: HBONE.max_frame_size,
            codes.MAX_HEADER_LIST_SIZE: HBONE.max_header_list_size, codes.ENABLE_PUSH: 0,
            codes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
        })  # fmt: skip
        self.h2.local_settings.acknowledge()
        self.h2.max_inbound_frame_size = HBONE.max_frame_size
        self.h2.incoming_buffer.max_frame_size = HBONE.max_frame_size
        self.h2.decoder.max_header_list_size = HBONE.max_header_list_size
        self.h2.increment_flow_control_window(HBONE.connection_window - 65535)
        self.h2.data_to_send()

    def feed(self, data: bytes) -> list[Verdict]:
        out: list[Verdict] = []
        earlier = set(self.reset_by_us)  # (not those this frame resets)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.dead = True
            return self._sent(earlier)
        for event in events:
            self._translate(event, out)
        return out + self._sent(earlier)

    def _translate(self, event: object, out: list[Verdict]) -> None:
        sid = getattr(event, "stream_id", 0)
        if isinstance(event, h2.events.StreamReset) and not event.remote_reset:
            self.reset_by_us.add(sid)  # a stream error: h2 reset it
        if isinstance(event, h2.events.RequestReceived):
            try:
                ConnectRequest.from_headers(list(event.headers))
            except BadRequest:
                self.h2.send_headers(sid, [(":status", "400")], end_stream=True)
                out.append(("rejected", sid))
                return
            self.open.add(sid)
            out.append(("open", sid))
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            if sid in self.open and event.data:
                out.append(("data", sid, len(event.data)))
        elif isinstance(event, h2.events.StreamEnded) and sid in self.open:
            self.remote_ended.add(sid)
            out.append(("end", sid))
        elif isinstance(event, h2.events.StreamReset) and sid in self.open:
            self.open.discard(sid)
            out.append(("reset", sid, int(event.error_code)))
        elif isinstance(event, h2.events.ConnectionTerminated):
            out.append(("goaway", int(event.last_stream_id or 0), int(event.error_code or 0)))
        elif isinstance(event, h2.events.PingAckReceived):
            out.append(("ping-ack",))

    def step(self, step: bytes | tuple[object, ...]) -> list[Verdict]:
        if isinstance(step, bytes):
            return self.feed(step)
        if step[0] == "respond":
            return self.respond(step[1], step[2])  # type: ignore[arg-type]
        return self.reset(step[1])  # type: ignore[arg-type]

    def respond(self, stream_id: int, status: int) -> list[Verdict]:
        if stream_id in self.open and stream_id not in self.answered:
            self.answered.add(stream_id)
            end = status != Status.OK
            try:
                self.h2.send_headers(stream_id, [(":status", str(status))], end_stream=end)
            except h2.exceptions.ProtocolError:
                end = True
            if end:
                self.open.discard(stream_id)
        return self._sent()

    def reset(self, stream_id: int) -> list[Verdict]:
        if stream_id in self.open:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, 8)
            self.open.discard(stream_id)
            self.reset_by_us.add(stream_id)
        return self._sent()

    def _sent(self, reset: set[int] | None = None) -> list[Verdict]:
        out = sent_verdicts(self.h2.data_to_send())
        # Deliberate difference: frames on a stream we reset are ignored, not answered.
        reset = self.reset_by_us if reset is None else reset
        return [v for v in out if not (v[0] == "rst-sent" and v[2] == STREAM_CLOSED
                                       and v[1] in reset)]  # fmt: skip


# -- random frames ------------------------------------------------------------------------

CONNECT = [(":method", "CONNECT"), (":authority", "10.0.0.1:80")]
BLOCKS = [
    encode_fields(CONNECT),
    encode_fields([(":method", "CONNECT"), (":authority", "no-port")]),  # HBONE: 400
    encode_fields([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a:1")]),
    encode_fields([("x-trailer", "1")]),  # trailers
    encode_fields([(":method", "CONNECT")]),  # malformed: no :authority
    encode_fields([(":method", "CONNECT"), (":authority", "10.0.0.1:80"), ("X-Up", "1")]),
    b"\xff\xff\xff\xff",  # not HPACK
]
stream_ids = st.sampled_from([1, 1, 1, 3, 3, 3, 5, 7, 2, 0])


def _build_headers(sid: int, block: bytes, end: bool, split: bool, padded: bool) -> bytes:
    flags = END_STREAM if end else 0
    if padded:
        return frame(HEADERS, flags | END_HEADERS | PADDED, sid, b"\x02" + block + b"\0\0")
    if split and len(block) >= 2:
        return frame(HEADERS, flags, sid, block[:1]) + frame(
            CONTINUATION, END_HEADERS, sid, block[1:]
        )
    return frame(HEADERS, flags | END_HEADERS, sid, block)


def _headers() -> st.SearchStrategy[bytes | tuple[object, ...]]:
    bools = st.booleans()
    return st.one_of(
        # a good CONNECT on the next stream id (``connect`` steps: the test picks the id)
        st.tuples(st.just("connect"), bools, bools, bools),
        st.tuples(st.just("connect"), bools, bools, bools),
        st.builds(_build_headers, st.sampled_from([1, 3]), st.just(BLOCKS[3]), st.just(True),
                  bools, bools),  # trailers
        st.builds(_build_headers, stream_ids, st.sampled_from(BLOCKS), bools, bools, bools),
    )  # fmt: skip


def _data() -> st.SearchStrategy[bytes]:
    def build(sid: int, size: int, end: bool, pad: int) -> bytes:
        payload = b"d" * size
        flags = END_STREAM if end else 0
        if pad:
            payload = bytes([pad - 1]) + payload + b"\0" * (pad - 1)
            flags |= PADDED
        return frame(DATA, flags, sid, payload)

    ids = st.one_of(st.sampled_from([1, 3]), stream_ids)  # mostly streams that are open
    return st.builds(build, ids, st.integers(0, 300), st.booleans(), st.integers(0, 3))


def _benign() -> st.SearchStrategy[bytes]:
    """Control frames a well-behaved client may send (on a stream that may be closed)."""
    settings_pairs = st.lists(
        st.sampled_from([(4, 1000), (4, 70000), (5, 16384), (2, 0), (3, 10), (1, 0), (99, 1)]),
        max_size=3,
        unique=True,
    )
    return st.one_of(
        st.builds(
            lambda s, c: frame(RST_STREAM, 0, s, struct.pack(">I", c)),
            st.sampled_from([1, 3]),
            st.sampled_from([0, 8]),
        ),
        st.builds(
            lambda s, i: frame(WINDOW_UPDATE, 0, s, struct.pack(">I", i)),
            st.sampled_from([0, 1, 3]),
            st.sampled_from([1, 1000]),
        ),
        st.builds(lambda s: frame(PRIORITY, 0, s, struct.pack(">IB", 0, 15)), stream_ids),
        st.builds(lambda a: frame(PING, a, 0, b"12345678"), st.sampled_from([0, 1])),
        st.builds(
            lambda p: frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in p)),
            settings_pairs,
        ),
        st.just(frame(SETTINGS, 1, 0)),
        st.builds(lambda s: frame(0x20, 0, s, b"ext"), stream_ids),
    )


def _hostile() -> st.SearchStrategy[bytes]:
    """Control frames that break a rule, or end the conversation (GOAWAY)."""
    settings_pairs = st.lists(
        st.sampled_from([(4, 2**31), (5, 100), (2, 2), (8, 2), (4, 1000)]), min_size=1, max_size=3
    )
    return st.one_of(
        st.builds(
            lambda s, c: frame(RST_STREAM, 0, s, struct.pack(">I", c)),
            stream_ids,
            st.sampled_from([0, 8, 1]),
        ),
        st.builds(
            lambda s, i: frame(WINDOW_UPDATE, 0, s, struct.pack(">I", i)),
            stream_ids,
            st.sampled_from([0, 2**31 - 1]),
        ),
        st.builds(
            lambda s, d: frame(PRIORITY, 0, s, struct.pack(">IB", d, 15)),
            stream_ids,
            st.sampled_from([0, 1, 3]),
        ),
        st.builds(
            lambda p: frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in p)),
            settings_pairs,
        ),
        st.builds(lambda s: frame(GOAWAY, 0, 0, struct.pack(">II", s, 0)), stream_ids),
        st.builds(
            lambda s: frame(PUSH_PROMISE, END_HEADERS, s, struct.pack(">I", 2) + BLOCKS[0]),
            stream_ids,
        ),
        st.builds(lambda s: frame(CONTINUATION, END_HEADERS, s, BLOCKS[0]), stream_ids),
        st.builds(
            lambda s, n: frame(kind=RST_STREAM, flags=0, stream_id=s, payload=b"\0" * n),
            stream_ids,
            st.sampled_from([3, 5]),
        ),
    )


def _control() -> st.SearchStrategy[bytes]:
    return st.one_of(_benign(), _benign(), _benign(), _hostile())


# Mostly what a client does (CONNECTs, DATA, control frames, the answers), so that
# sequences run long before a rule is broken; then perhaps one frame that breaks one.
steps = st.tuples(
    st.lists(
        st.one_of(
            _headers(), _headers(), _data(), _data(), _benign(),
            st.tuples(st.just("respond"), stream_ids, st.sampled_from([200, 200, 503])),
            st.tuples(st.just("reset"), stream_ids),
        ),
        min_size=3,
        max_size=30,
    ),
    st.lists(_hostile(), max_size=1),
).map(lambda parts: parts[0] + parts[1])  # fmt: skip


@settings(
    max_examples=int(__import__("os").environ.get("DIFF_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps)
def test_same_verdicts_as_h2(sequence: list[bytes | tuple[object, ...]]) -> None:
    ours, ref = _Ours(), _Reference()
    start = PREFACE + frame(SETTINGS, 0, 0)
    assert ours.feed(start) == [v for v in ref.feed(start) if v[0] != "rst-sent"]
    highest = 3  # the highest stream the client opened (its HEADERS seen)
    peer_reset: set[int] = set()
    prelude: list[bytes | tuple[object, ...]] = [  # two tunnels, one answered
        frame(HEADERS, END_HEADERS, 1, BLOCKS[0]), frame(HEADERS, END_HEADERS, 3, BLOCKS[0]),
        ("respond", 1, 200),
    ]  # fmt: skip
    for step in prelude:
        got, want = ours.step(step), ref.step(step)
        assert got == want, step
    for step in sequence:
        if step[0] == "connect":  # a good CONNECT on the next stream
            step = _build_headers(highest + 2, BLOCKS[0], *step[1:])
        reset = peer_reset | ref.reset_by_us  # streams reset before this step, either side
        got, want = ours.step(step), ref.step(step)
        if _deliberate(step, highest, reset, ours.dead):
            return  # from here on the two may differ (each case: _deliberate)
        assert (_same_codes(got, want), ours.dead) == (want, ref.dead), step
        if ours.dead:
            return
        peer_reset.update(int(v[1]) for v in got if v[0] == "reset")  # type: ignore[call-overload]
        if isinstance(step, bytes) and step[3] == HEADERS and step[8] % 2:
            highest = max(highest, int.from_bytes(step[5:9], "big"))


# A connection error's code: (ours, h2's) where ours is the one RFC 9113 names.
_EQUIVALENT = {
    (9, PROTOCOL_ERROR),  # a field block that does not decode: COMPRESSION_ERROR (4.3)
    # HEADERS on a stream both sides ended: STREAM_CLOSED (5.1); h2 says PROTOCOL_ERROR once
    # the stream has left its table (it checks the block as a new request first)
    (STREAM_CLOSED, PROTOCOL_ERROR),
}


def _same_codes(got: list[Verdict], want: list[Verdict]) -> list[Verdict]:
    """``got`` with each GOAWAY code that is equivalent to h2's (``_EQUIVALENT``) as h2's."""
    theirs = {v[1] for v in want if v[0] == "goaway-sent"}
    return [
        ("goaway-sent", code)
        if v[0] == "goaway-sent" and (v[1], code := next(iter(theirs), -1)) in _EQUIVALENT
        else v
        for v in got
    ]


def _deliberate(
    step: bytes | tuple[object, ...], highest: int, reset: set[int], dead: bool
) -> bool:
    """Steps where we differ from h2 on purpose; asserts our verdict, True to stop comparing."""
    if not isinstance(step, bytes) or len(step) < 9:
        return False
    kind, stream_id = step[3], int.from_bytes(step[5:9], "big")
    if kind == HEADERS and stream_id in reset:
        # HEADERS on a reset stream: ignored if we reset it (5.1), else RST_STREAM (5.4.2);
        # h2 answers RST_STREAM, or, once the stream is out of its table, checks the block
        # as a new request (a connection error). (A block that does not decode fails
        # the connection for both.)
        return True
    if (
        kind == PRIORITY
        and stream_id
        and len(step) == 14
        and int.from_bytes(step[9:13], "big") == stream_id
    ):
        # A stream depending on itself: a stream error (RFC 9113 5.3.1), h2 ends the connection.
        assert not dead
        return True
    keys = [step[i : i + 2] for i in range(9, len(step) - 5, 6)] if kind == SETTINGS else []
    if len(keys) != len(set(keys)) and not step[4] & 1:
        # A setting named twice in one frame: we check each value in order (RFC 9113 6.5.3),
        # h2 only the last one.
        return True
    if kind == WINDOW_UPDATE and 0 < stream_id <= highest and stream_id % 2 and not any(step[9:13]):
        # An increment of 0 on a stream: a stream error (RFC 9113 6.9); h2 ends the connection.
        assert not dead
        return True
    if kind == CONTINUATION:  # (a step never starts inside a header block)
        # CONTINUATION without a header block: PROTOCOL_ERROR (RFC 9113 6.10); h2 gives
        # STREAM_CLOSED for some streams.
        assert dead
        return True
    if kind == GOAWAY and not stream_id:
        # h2 takes no frame after the peer's GOAWAY (a connection error); RFC 9113 6.8 lets
        # the streams up to its last stream id run on, and we do.
        assert not dead
        return True
    if kind == RST_STREAM and (stream_id > highest or stream_id % 2 == 0):
        # RST_STREAM on an idle stream: a connection error (RFC 9113 6.4), h2 ignores it.
        assert dead
        return True
    return False
