"""Differential, client side: our HBONE client against h2's on the same random server frames.

As ``test_differential`` (the server side, which explains the method): our client
(``HboneConnection``) and an h2 client configured as HBONE's was, each with the same
CONNECTs open, are fed the same frames from a server (responses good and bad, 1xx,
trailers, DATA, RST_STREAM, WINDOW_UPDATE, PING, SETTINGS, GOAWAY, PUSH_PROMISE...)
and the same application steps (open, reset); the verdicts must match. Deliberate
differences, besides those of the server side (``_deliberate``): DATA before a
response's head is a stream error for us (PROTOCOL_ERROR, RFC 9113 8.1: a response
starts with its head), h2 delivers it; a 1xx head on a stream reset earlier or after its final head is treated as any other
head there (a stream error, or trailers), h2 ends the connection.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.hbone import events as ev
from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.protocol import HboneConnection, Side
from ambient.http2.hpackmemo import encode_fields

from .test_differential import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HBONE,
    HEADERS,
    PADDED,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Verdict,
    _control,
    _data,
    _same_codes,
    frame,
    sent_verdicts,
)

REQUEST = ConnectRequest(SocketAddress.parse("10.0.0.7:8080"))
REFUSED_STREAM = 7


class _Ours:
    def __init__(self) -> None:
        self.conn = HboneConnection(Side.CLIENT, HBONE)
        self.conn.initiate()
        self.conn.data_to_send()
        self.dead = False

    def feed(self, data: bytes) -> list[Verdict]:
        out: list[Verdict] = []
        for event in self.conn.receive_data(data):
            if isinstance(event, ev.ResponseReceived):
                out.append(("response", event.stream_id, event.status))
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

    def open(self) -> list[Verdict]:
        if self.conn.goaway_received:
            return []
        return [("opened", self.conn.open_stream(REQUEST)), *self._sent()]

    def reset(self, stream_id: int) -> list[Verdict]:
        self.conn.reset(stream_id)
        return self._sent()

    def _sent(self) -> list[Verdict]:
        return sent_verdicts(self.conn.data_to_send())


@dataclass
class _Reference:
    """h2 as HBONE's client ran it, with the HBONE layer on top that ``protocol.py`` had."""

    h2: h2.connection.H2Connection = field(init=False)
    open: set[int] = field(default_factory=set)
    reset_by_us: set[int] = field(default_factory=set)
    goaway: bool = False
    dead: bool = False

    def __post_init__(self) -> None:
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_inbound_headers=True,
            normalize_inbound_headers=False, validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )  # fmt: skip
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        codes = h2.settings.SettingCodes
        self.h2.update_settings({
            codes.INITIAL_WINDOW_SIZE: HBONE.stream_window, codes.MAX_FRAME_SIZE: HBONE.max_frame_size,
            codes.MAX_HEADER_LIST_SIZE: HBONE.max_header_list_size, codes.ENABLE_PUSH: 0,
        })  # fmt: skip
        self.h2.local_settings.acknowledge()
        self.h2.max_inbound_frame_size = HBONE.max_frame_size
        self.h2.incoming_buffer.max_frame_size = HBONE.max_frame_size
        self.h2.decoder.max_header_list_size = HBONE.max_header_list_size
        self.h2.increment_flow_control_window(HBONE.connection_window - 65535)
        self.h2.data_to_send()

    def feed(self, data: bytes) -> list[Verdict]:
        out: list[Verdict] = []
        earlier = set(self.reset_by_us)
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
            self.reset_by_us.add(sid)
        if isinstance(event, h2.events.ResponseReceived):
            status = dict(event.headers).get(b":status", b"")
            code = int(status) if status.isdigit() else 0
            out.append(("response", sid, code))
            if code != Status.OK and sid in self.open:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.end_stream(sid)
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            if sid in self.open and event.data:
                out.append(("data", sid, len(event.data)))
        elif isinstance(event, h2.events.StreamEnded) and sid in self.open:
            out.append(("end", sid))
        elif isinstance(event, h2.events.StreamReset) and sid in self.open:
            self.open.discard(sid)
            out.append(("reset", sid, int(event.error_code)))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = int(event.last_stream_id or 0)
            out.append(("goaway", last, int(event.error_code or 0)))
            for stream_id in sorted(self.open):
                if stream_id > last:
                    self.open.discard(stream_id)
                    out.append(("reset", stream_id, REFUSED_STREAM))
        elif isinstance(event, h2.events.PingAckReceived):
            out.append(("ping-ack",))

    def open_stream(self) -> list[Verdict]:
        if self.goaway:
            return []
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, REQUEST.to_headers(), end_stream=False)
        self.open.add(sid)
        return [("opened", sid), *self._sent()]

    def reset(self, stream_id: int) -> list[Verdict]:
        if stream_id in self.open:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, 8)
            self.open.discard(stream_id)
            self.reset_by_us.add(stream_id)
        return self._sent()

    def _sent(self, reset: set[int] | None = None) -> list[Verdict]:
        out = sent_verdicts(self.h2.data_to_send())
        reset = self.reset_by_us if reset is None else reset
        return [v for v in out if not (v[0] == "rst-sent" and v[2] == 5 and v[1] in reset)]


BLOCKS = [
    encode_fields([(":status", "200")]),
    encode_fields([(":status", "503")]),
    encode_fields([(":status", "100")]),
    encode_fields([("x-trailer", "1")]),  # trailers, or a response without :status
    encode_fields([(":status", "200"), (":path", "/")]),  # malformed response
    b"\xff\xff\xff\xff",
]
stream_ids = st.sampled_from([1, 1, 3, 3, 5, 2, 0])


def _headers() -> st.SearchStrategy[bytes]:
    def build(sid: int, block: bytes, end: bool, padded: bool) -> bytes:
        flags = (END_STREAM if end else 0) | END_HEADERS
        if padded:
            return frame(HEADERS, flags | PADDED, sid, b"\x02" + block + b"\0\0")
        return frame(HEADERS, flags, sid, block)

    return st.builds(build, stream_ids, st.sampled_from(BLOCKS), st.booleans(), st.booleans())


steps = st.lists(
    st.one_of(
        _headers(), _headers(), _data(), _control(), st.just(("open",)),
        st.tuples(st.just("reset"), stream_ids),
    ),
    max_size=25,
)  # fmt: skip


@settings(
    max_examples=int(os.environ.get("DIFF_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps)
def test_same_verdicts_as_h2(sequence: list[bytes | tuple[object, ...]]) -> None:
    ours, ref = _Ours(), _Reference()
    assert ours.open() == ref.open_stream()  # stream 1
    assert ours.open() == ref.open_stream()  # stream 3
    start = frame(SETTINGS, 0, 0)
    assert ours.feed(start) == ref.feed(start)
    headed: set[int] = set()  # streams whose response head we reported
    reset: set[int] = set()  # streams reset (by either side, or by a stream error)
    for step in sequence:
        if isinstance(step, bytes):
            got, want = ours.feed(step), ref.feed(step)
        elif step[0] == "open":
            got, want = ours.open(), ref.open_stream()
        else:
            got, want = ours.reset(step[1]), ref.reset(step[1])  # type: ignore[arg-type]
            reset.add(step[1])  # type: ignore[arg-type]
        opened = ours.conn._core._next_id - 2
        if _deliberate(step, opened, headed, reset, ours.dead):
            return
        assert (_same_codes(got, want), ours.dead) == (want, ref.dead), step
        if ours.dead:
            return
        headed.update(int(v[1]) for v in got if v[0] == "response")  # type: ignore[call-overload]
        reset.update(int(v[1]) for v in got if v[0] == "reset")  # type: ignore[call-overload]


def _deliberate(
    step: bytes | tuple[object, ...], opened: int, headed: set[int], reset: set[int], dead: bool
) -> bool:
    """Steps where we differ from h2 on purpose; asserts our verdict, True to stop comparing."""
    if not isinstance(step, bytes) or len(step) < 9:
        return False
    kind, stream_id = step[3], int.from_bytes(step[5:9], "big")
    idle = stream_id > opened or stream_id % 2 == 0
    if kind == DATA and not idle and stream_id not in headed:
        assert not dead  # DATA before the response: a stream error (RFC 9113 8.1)
        return True
    if kind == HEADERS and BLOCKS[2] in step and (stream_id in reset or stream_id in headed):
        # a 1xx after the final head or on a reset stream: a stream error (STREAM_CLOSED, or
        # trailers without END_STREAM: PROTOCOL_ERROR); h2 ends the connection
        return True
    if kind == PRIORITY and stream_id and len(step) == 14 and step[9:13] == step[5:9]:
        assert not dead  # depending on itself: a stream error (5.3.1)
        return True
    if kind == WINDOW_UPDATE and stream_id and not idle and not any(step[9:13]):
        assert not dead  # an increment of 0: a stream error (6.9)
        return True
    if kind == RST_STREAM and stream_id and idle:
        assert dead  # RST_STREAM on an idle stream: a connection error (6.4)
        return True
    if kind == CONTINUATION:
        assert dead  # without a header block: PROTOCOL_ERROR (6.10)
        return True
    if kind == GOAWAY and not stream_id:
        return True  # h2 takes no frame after it; we keep the streams up to its last
    keys = [step[i : i + 2] for i in range(9, len(step) - 5, 6)] if kind == SETTINGS else []
    return len(keys) != len(set(keys)) and not step[4] & 1  # a setting named twice
