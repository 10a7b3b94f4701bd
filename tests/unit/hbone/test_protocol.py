"""The sans-io HBONE connection, as scripts: feed bytes in, check events and bytes out."""

from __future__ import annotations

import h2.errors
import pytest

from ambient.hbone import events as ev
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.protocol import HboneConnection, HboneSettings, MiB, Side

from .pair import TARGET, Pair, raw_client, received


def test_connect_is_received_with_its_headers() -> None:
    pair = Pair()
    request = ConnectRequest(
        SocketAddress.parse("10.0.0.7:8080"),
        forwarded_for=SocketAddress.parse("10.0.0.9:40000"),
        baggage="k=v",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    stream_id = pair.client.open_stream(request)
    _, at_server = pair.pump()
    assert at_server == [ev.ConnectReceived(stream_id, request)]


def test_200_opens_a_tunnel_both_ways() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.send(sid, b"ping")
    pair.server.send(sid, b"pong")
    at_client, at_server = pair.pump()
    assert at_server == [ev.DataReceived(sid, b"ping")]
    assert at_client == [ev.DataReceived(sid, b"pong")]


@pytest.mark.parametrize("status", [400, 401, 503])
def test_refusal_ends_the_stream(status: int) -> None:
    pair = Pair()
    sid = pair.client.open_stream(TARGET)
    pair.pump()
    pair.server.respond(sid, status)
    at_client, _ = pair.pump()
    assert at_client[0] == ev.ResponseReceived(sid, status)
    assert pair.client.open_streams == 0
    assert pair.server.open_streams == 0


def test_half_close_keeps_the_other_direction_open() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.end_stream(sid)
    _, at_server = pair.pump()
    assert at_server == [ev.StreamEnded(sid)]
    pair.server.send(sid, b"late reply")
    at_client, _ = pair.pump()
    assert at_client == [ev.DataReceived(sid, b"late reply")]
    pair.server.end_stream(sid)
    at_client, _ = pair.pump()
    assert at_client == [ev.StreamEnded(sid)]
    assert pair.client.open_streams == pair.server.open_streams == 0


def test_end_stream_waits_for_queued_bytes() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.send(sid, b"x" * (6 * MiB))  # more than the 4 MiB stream window
    pair.client.end_stream(sid)
    _, at_server = pair.pump()
    assert received(at_server, sid) == 4 * MiB
    assert ev.StreamEnded(sid) not in at_server
    pair.server.consumed(sid, 4 * MiB)
    _, at_server = pair.pump()
    assert received(at_server, sid) == 2 * MiB
    assert at_server[-1] == ev.StreamEnded(sid)


def test_stream_window_is_4_mib_and_credit_follows_consumption() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.send(sid, b"x" * (10 * MiB))
    _, at_server = pair.pump()
    assert received(at_server, sid) == 4 * MiB
    assert pair.client.queued(sid) == 6 * MiB
    pair.server.consumed(sid, 1 * MiB)  # below the update threshold: nothing moves yet
    _, at_server = pair.pump()
    pair.server.consumed(sid, 3 * MiB)
    _, more = pair.pump()
    assert received(at_server + more, sid) == 4 * MiB
    assert pair.client.queued(sid) == 2 * MiB


def test_connection_window_is_16_mib_across_streams() -> None:
    pair = Pair()
    sids = [pair.open() for _ in range(5)]
    for sid in sids:
        pair.client.send(sid, b"y" * (4 * MiB))
    _, at_server = pair.pump()
    total = sum(received(at_server, sid) for sid in sids)
    assert total == 16 * MiB
    assert sum(pair.client.queued(sid) for sid in sids) == 4 * MiB


def test_reset_reaches_the_peer() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.reset(sid)
    _, at_server = pair.pump()
    assert at_server == [ev.StreamReset(sid, h2.errors.ErrorCodes.CANCEL, True)]
    assert pair.server.open_streams == 0


def test_data_after_reset_is_dropped_and_credited() -> None:
    pair = Pair()
    sid = pair.open()
    pair.server.reset(sid)
    pair.client.send(sid, b"z" * 1000)  # the client has not seen the reset yet
    at_client, at_server = pair.pump()
    assert received(at_server, sid) == 0
    assert ev.StreamReset(sid, h2.errors.ErrorCodes.CANCEL, True) in at_client


def test_goaway_refuses_streams_the_server_never_saw() -> None:
    pair = Pair()
    first = pair.open()
    pair.server.close()
    second = pair.client.open_stream(TARGET)
    at_client, _ = pair.pump()
    assert ev.GoAwayReceived(first, 0) in at_client
    assert ev.StreamReset(second, h2.errors.ErrorCodes.REFUSED_STREAM, True) in at_client
    assert pair.client.goaway_received


def test_ping_is_answered() -> None:
    pair = Pair()
    pair.client.ping(b"12345678")
    at_client, _ = pair.pump()
    assert at_client == [ev.PingAcknowledged(b"12345678")]


def test_non_connect_request_gets_400() -> None:
    pair = Pair()
    raw = raw_client()
    server = HboneConnection(Side.SERVER)
    server.initiate()
    server.receive_data(raw.data_to_send())
    raw.receive_data(server.data_to_send())
    raw.send_headers(
        1,
        [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "10.0.0.1:80")],
        end_stream=True,
    )
    events = server.receive_data(raw.data_to_send())
    assert events == [ev.ConnectRejected(1, "method 'GET' is not CONNECT")]
    responses = raw.receive_data(server.data_to_send())
    assert any(getattr(e, "headers", None) == [(b":status", b"400")] for e in responses)
    del pair


def test_connect_with_path_is_refused() -> None:
    raw = raw_client()
    server = HboneConnection(Side.SERVER)
    server.initiate()
    server.receive_data(raw.data_to_send())
    raw.receive_data(server.data_to_send())
    raw.send_headers(
        1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80"), (":path", "/")], end_stream=False
    )
    events = server.receive_data(raw.data_to_send())
    assert not any(isinstance(e, ev.ConnectReceived) for e in events)
    assert events  # refused one way or the other: 400 or a protocol error


def test_oversized_header_list_is_refused() -> None:
    pair = Pair()
    request = ConnectRequest(TARGET.authority, extra_headers=(("x-big", "a" * 40_000),))
    pair.client.open_stream(request)
    _, at_server = pair.pump()
    assert not any(isinstance(e, ev.ConnectReceived) for e in at_server)


def test_garbage_fails_the_connection_once() -> None:
    server = HboneConnection(Side.SERVER)
    server.initiate()
    events = server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(events) == 1 and isinstance(events[0], ev.ConnectionFailed)
    assert server.data_to_send() != b""  # GOAWAY queued
    assert server.receive_data(b"more") == []


def test_flow_control_violation_fails_the_connection() -> None:
    import hyperframe.frame as hf

    raw = raw_client()
    server = HboneConnection(Side.SERVER, HboneSettings())
    server.initiate()
    server.receive_data(raw.data_to_send())
    raw.receive_data(server.data_to_send())
    raw.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    server.receive_data(raw.data_to_send())
    flood = b"".join(hf.DataFrame(1, data=b"\0" * 16384).serialize() for _ in range(300))
    events = server.receive_data(flood)  # ~4.7 MiB against a 4 MiB window
    assert isinstance(events[-1], ev.ConnectionFailed)
    assert "flow control" in events[-1].reason.lower() or "window" in events[-1].reason.lower()
