"""DATA in the sans-io core, delivered as it arrives: frames split anywhere, windows, padding,
resets, interleaving, the peer's maximum frame size, and a property check that how the reads
split the bytes changes nothing that either side sees."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame as hf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.hbone import events as ev
from ambient.hbone.protocol import HboneConnection, HboneSettings, Side

from .pair import TARGET, Pair, raw_client, received

KiB = 1024
MiB = 1024 * KiB


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes whose order matters: a reordering or a lost piece changes them."""
    return bytes((i * 7 + seed) % 251 for i in range(size))


def data_of(events: list[ev.Event], stream_id: int) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, ev.DataReceived) and e.stream_id == stream_id
    )


def feed(conn: HboneConnection, data: bytes, sizes: list[int]) -> list[ev.Event]:
    """Deliver ``data`` in pieces of the given sizes (cycled)."""
    events: list[ev.Event] = []
    pos = i = 0
    while pos < len(data):
        size = max(1, sizes[i % len(sizes)])
        events += conn.receive_data(data[pos : pos + size])
        pos += size
        i += 1
    return events


def frames(data: bytes) -> list[hf.Frame]:
    """Parse serialized frames (no preface)."""
    out: list[hf.Frame] = []
    pos = 0
    while pos < len(data):
        frame, length = hf.Frame.parse_frame_header(memoryview(data[pos : pos + 9]))
        frame.parse_body(memoryview(data[pos + 9 : pos + 9 + length]))
        out.append(frame)
        pos += 9 + length
    return out


def test_frames_split_at_any_byte_arrive_whole_and_in_order() -> None:
    for sizes in ([1], [7, 1, 9, 3], [9], [10, 16 * KiB], [64 * KiB + 5]):
        pair = Pair()
        sid = pair.open()
        payload = pattern(300 * KiB)
        pair.client.send(sid, payload)
        pair.client.end_stream(sid)
        events = feed(pair.server, pair.client.data_to_send(), sizes)
        assert data_of(events, sid) == payload, sizes
        assert events[-1] == ev.StreamEnded(sid)


def test_window_exhaustion_holds_bytes_back_until_credit_returns() -> None:
    pair = Pair(HboneSettings(stream_window=32 * KiB))
    sid = pair.open()
    payload = pattern(100 * KiB, seed=3)
    pair.client.send(sid, payload)
    got = b""
    rounds = 0
    while len(got) < len(payload):
        _, at_server = pair.pump()
        chunk = data_of(at_server, sid)
        assert len(chunk) <= 32 * KiB  # never more than the window in flight
        got += chunk
        pair.server.consumed(sid, len(chunk))
        rounds += 1
        assert rounds < 20, "stalled: credit did not reopen the window"
    assert got == payload
    assert pair.client.queued(sid) == 0
    assert rounds >= 4  # it really was held back by the window


def test_a_frame_overrunning_the_window_fails_on_its_header() -> None:
    raw = raw_client()
    server = HboneConnection(Side.SERVER, HboneSettings(stream_window=64 * KiB))
    server.initiate()
    server.receive_data(raw.data_to_send())
    raw.receive_data(server.data_to_send())
    raw.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    server.receive_data(raw.data_to_send())
    header = (100 * KiB).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")
    events = server.receive_data(header)  # no payload yet: refused at once, nothing buffered
    assert isinstance(events[-1], ev.ConnectionFailed)
    goaway = [f for f in frames(server.data_to_send()) if isinstance(f, hf.GoAwayFrame)]
    assert goaway and goaway[-1].error_code == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR


def test_padded_data_is_delivered_and_its_padding_credited() -> None:
    raw = raw_client()
    server = HboneConnection(Side.SERVER, HboneSettings(stream_window=65535))
    server.initiate()
    server.receive_data(raw.data_to_send())
    raw.receive_data(server.data_to_send())
    raw.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    events = server.receive_data(raw.data_to_send())
    server.respond(1, 200)
    raw.receive_data(server.data_to_send())
    for i in range(200):  # 200 x (1 byte + 255 padding): 51,200 flow-controlled bytes
        raw.send_data(1, bytes([i]), pad_length=254)
    events = feed(server, raw.data_to_send(), [5, 300, 1])
    assert data_of(events, 1) == bytes(range(200))
    raw.receive_data(server.data_to_send())
    # The padding was credited at once (h2 returns credit in steps of half a window):
    # only the 200 unconsumed data bytes, and less than a step, stay charged.
    assert raw.local_flow_control_window(1) >= 65535 - 200 - 32 * KiB
    assert raw.local_flow_control_window(1) > 65535 - 51_200


def test_local_reset_in_the_middle_of_a_frame_returns_the_rest_of_the_credit() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.send(sid, b"a" * MiB)  # one 1 MiB DATA frame
    wire = pair.client.data_to_send()
    half = len(wire) // 2
    first = pair.server.receive_data(wire[:half])
    got = len(data_of(first, sid))
    assert 0 < got < MiB  # delivered before the frame was complete
    pair.server.consumed(sid, got)
    pair.server.reset(sid)
    rest = pair.server.receive_data(wire[half:])
    assert data_of(rest, sid) == b""
    pair.pump()
    # No credit is lost: other streams can move 32 MiB (twice the connection window)
    # as long as the server consumes what it receives.
    sids = [pair.open() for _ in range(4)]
    for other in sids:
        pair.client.send(other, b"b" * (8 * MiB))
    total = 0
    for _ in range(20):
        _, at_server = pair.pump()
        if not at_server:
            break
        for other in sids:
            pair.server.consumed(other, received(at_server, other))
            total += received(at_server, other)
    assert total == 32 * MiB


def test_data_then_reset_in_one_read_are_reported_in_order() -> None:
    raw = raw_client()
    server = HboneConnection(Side.SERVER)
    server.initiate()
    server.receive_data(raw.data_to_send())
    raw.receive_data(server.data_to_send())
    raw.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    server.receive_data(raw.data_to_send())
    server.respond(1, 200)
    raw.receive_data(server.data_to_send())
    raw.send_data(1, b"before")
    raw.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    events = server.receive_data(raw.data_to_send())
    assert events == [
        ev.DataReceived(1, b"before"),
        ev.StreamReset(1, h2.errors.ErrorCodes.CANCEL, True),
    ]
    assert server.open_streams == 0


def test_interleaved_streams_keep_their_own_bytes() -> None:
    pair = Pair(HboneSettings(max_frame_size=16 * KiB))
    sids = [pair.open() for _ in range(3)]
    payloads = {sid: pattern(200 * KiB, seed=sid) for sid in sids}
    for offset in range(0, 200 * KiB, 10 * KiB):  # alternate small writes across streams
        for sid in sids:
            pair.client.send(sid, payloads[sid][offset : offset + 10 * KiB])
    wire = pair.client.data_to_send()
    data_frames = [f for f in frames(wire) if isinstance(f, hf.DataFrame)]
    assert {f.stream_id for f in data_frames[:3]} == set(sids)  # really interleaved
    events = feed(pair.server, wire, [4093])
    for sid in sids:
        assert data_of(events, sid) == payloads[sid]


def _client_with_raw_server(max_frame: int) -> tuple[HboneConnection, h2.connection.H2Connection]:
    client = HboneConnection(Side.CLIENT)
    client.initiate()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    codes = h2.settings.SettingCodes
    server.update_settings({codes.MAX_FRAME_SIZE: max_frame, codes.INITIAL_WINDOW_SIZE: MiB})
    server.increment_flow_control_window(MiB)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the SETTINGS ACK
    return client, server


def test_outbound_frames_follow_the_peers_maximum_frame_size_as_it_changes() -> None:
    client, server = _client_with_raw_server(16 * KiB)
    sid = client.open_stream(TARGET)
    server.receive_data(client.data_to_send())
    server.send_headers(sid, [(":status", "200")])
    client.receive_data(server.data_to_send())
    client.send(sid, pattern(100 * KiB))
    sizes = [len(f.data) for f in frames(client.data_to_send()) if isinstance(f, hf.DataFrame)]
    assert max(sizes) == 16 * KiB and sum(sizes) == 100 * KiB
    server.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 64 * KiB})
    client.receive_data(server.data_to_send())
    client.send(sid, pattern(200 * KiB))
    out = frames(client.data_to_send())
    sizes = [len(f.data) for f in out if isinstance(f, hf.DataFrame)]
    assert max(sizes) == 64 * KiB
    # h2 on the other end accepts every frame and accounts for every byte.
    # (frame by frame: h2 applies a new maximum only from its next read after the ACK)
    received_events = [e for f in out for e in server.receive_data(f.serialize())]
    assert sum(
        len(e.data) for e in received_events if isinstance(e, h2.events.DataReceived)
    ) == sum(sizes)


# -- property: reads split anywhere against whole reads -----------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 2), st.integers(1, 200 * KiB)),
        st.tuples(st.just("consume"), st.integers(0, 2), st.integers(1, 300 * KiB)),
        st.tuples(st.just("end"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("reset"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("pump"), st.integers(1, 70 * KiB), st.integers(1, 20 * KiB)),
    ),
    max_size=25,
)


class _Run:
    """One client/server pair driven by the operations, recording what each side saw."""

    def __init__(self, split: bool) -> None:
        self.pair = Pair(HboneSettings(stream_window=128 * KiB, max_frame_size=32 * KiB))
        self.split = split  # False: every read is all the peer wrote (frames whole)
        self.sent = {sid: bytearray() for sid in range(1, 7, 2)}  # what the client wrote
        self.stopped: set[int] = set()  # streams the client ended or reset
        self.sids = [self.pair.open() for _ in range(3)]
        self.data: dict[tuple[str, int], bytearray] = {}
        self.others: list[tuple[str, ev.Event]] = []
        self.unconsumed = {sid: 0 for sid in self.sids}

    def apply(self, op: tuple[str, int, int]) -> None:
        kind, a, b = op
        if kind == "pump":
            self.pump([a, b])
            return
        sid = self.sids[a]
        if kind == "send":
            if sid not in self.stopped:
                self.sent[sid] += pattern(b, seed=a)
            self.pair.client.send(sid, pattern(b, seed=a))
        elif kind == "consume":
            take = min(b, self.unconsumed[sid])
            self.unconsumed[sid] -= take
            self.pair.server.consumed(sid, take)
        elif kind == "end":
            self.stopped.add(sid)
            self.pair.client.end_stream(sid)
        else:
            self.stopped.add(sid)
            self.pair.client.reset(sid)

    def pump(self, sizes: list[int]) -> None:
        if not self.split:
            sizes = [1 << 30]
        for _ in range(50):
            to_server = self.pair.client.data_to_send()
            to_client = self.pair.server.data_to_send()
            if not to_server and not to_client:
                return
            for side, conn, data in (
                ("server", self.pair.server, to_server),
                ("client", self.pair.client, to_client),
            ):
                for event in feed(conn, data, sizes):
                    if isinstance(event, ev.DataReceived):
                        self.data.setdefault((side, event.stream_id), bytearray()).extend(
                            event.data
                        )
                        if side == "server":
                            self.unconsumed[event.stream_id] += len(event.data)
                    else:
                        self.others.append((side, event))

    def state(self) -> tuple[object, ...]:
        return (
            {k: bytes(v) for k, v in self.data.items()},
            self.others,
            [self.pair.client.queued(sid) for sid in self.sids],
            self.pair.client.open_streams,
            self.pair.server.open_streams,
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_how_reads_split_the_bytes_changes_nothing(operations: list[tuple[str, int, int]]) -> None:
    split, whole = _Run(split=True), _Run(split=False)
    for op in [*operations, ("pump", 1 << 20, 1 << 20)]:
        split.apply(op)
        whole.apply(op)
        assert split.state() == whole.state(), op
        for sid in split.sids:  # what arrived is what was sent, in order, within the window
            got = bytes(split.data.get(("server", sid), b""))
            assert got == bytes(split.sent[sid][: len(got)]), op
            assert split.unconsumed[sid] <= 128 * KiB, op


def test_buffers_for_writelines_carry_the_same_bytes_without_copying_large_payloads() -> None:
    pair = Pair()
    sid = pair.open()
    payload = pattern(600 * KiB, seed=9)
    pair.client.send(sid, b"small")
    pair.client.send(sid, payload)
    pair.client.send(sid, b"tail")
    pieces = pair.client.buffers_to_send()
    assert any(isinstance(p, memoryview) for p in pieces)  # the bulk went uncopied
    assert all(len(p) >= 16 * KiB for p in pieces[:-1])  # no tiny TLS records in between
    events = pair.server.receive_data(b"".join(pieces))
    assert data_of(events, sid) == b"small" + payload + b"tail"
