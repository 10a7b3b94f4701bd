"""``hbone.fields.check_block`` refuses exactly the header blocks h2's validation refuses.

h2's inbound validation is off in the HBONE core (it is slower); these tests hold
the one-pass check to h2's verdict on random blocks built from the fields and
values where the rules bite, and check that a malformed CONNECT still fails the
connection end to end.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.exceptions
import h2.utilities
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.hbone import events as ev
from ambient.hbone.fields import BadBlock, Block, check_block
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.protocol import HboneConnection, Side

NAMES = [b":method", b":scheme", b":authority", b":path", b":status", b":protocol", b":x",
         b"host", b"te", b"connection", b"keep-alive", b"proxy-connection", b"upgrade",
         b"transfer-encoding", b"forwarded", b"cookie", b"x-a", b"X-Up", b"bad name", b"",
         b"a:b", b"\x7f", b"caf\xc3\xa9", b"::"]  # fmt: skip
VALUES = [b"CONNECT", b"GET", b"", b"trailers", b"Trailers", b"gzip", b"h", b"10.0.0.1:80",
          b" lead", b"trail\t", b"a\rb", b"a\nb", b"a\x00b", b"\xff\xfe", b"200", b"/",
          b"a b", b"\t"]  # fmt: skip
FLAGS = {
    Block.REQUEST: h2.utilities.HeaderValidationFlags(False, False, False, False),
    Block.RESPONSE: h2.utilities.HeaderValidationFlags(True, False, True, False),
    Block.TRAILERS: h2.utilities.HeaderValidationFlags(False, True, False, False),
}

fields = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=7)


def h2_accepts(headers: list[tuple[bytes, bytes]], kind: Block) -> bool:
    try:
        list(h2.utilities.validate_headers(headers, FLAGS[kind]))
    except h2.exceptions.ProtocolError:
        return False
    return True


def ours_accepts(headers: list[tuple[bytes, bytes]], kind: Block) -> bool:
    try:
        check_block(headers, kind)
    except BadBlock:
        return False
    return True


@settings(max_examples=3000, deadline=None)
@given(headers=fields, kind=st.sampled_from(list(Block)))
def test_same_verdict_as_h2(headers: list[tuple[bytes, bytes]], kind: Block) -> None:
    assert ours_accepts(headers, kind) == h2_accepts(headers, kind)


@settings(max_examples=1000, deadline=None)
@given(extra=fields, kind=st.sampled_from(list(Block)))
def test_same_verdict_as_h2_on_well_formed_heads(
    extra: list[tuple[bytes, bytes]], kind: Block
) -> None:
    """Random fields after a valid head, so the later checks are reached too."""
    head = {
        Block.REQUEST: [(b":method", b"CONNECT"), (b":authority", b"10.0.0.1:80")],
        Block.RESPONSE: [(b":status", b"200")],
        Block.TRAILERS: [],
    }[kind]
    headers = head + extra
    assert ours_accepts(headers, kind) == h2_accepts(headers, kind)


@pytest.mark.parametrize(
    "headers",
    [
        [(":method", "CONNECT"), (":authority", "10.0.0.1:80"), ("X-Upper", "1")],
        [(":method", "CONNECT"), (":authority", "10.0.0.1:80"), ("connection", "close")],
        [(":method", "CONNECT"), (":authority", "10.0.0.1:80"), ("x", " padded")],
        [(":authority", "10.0.0.1:80"), (":method", "CONNECT"), (":method", "CONNECT")],
        [("x", "1"), (":method", "CONNECT"), (":authority", "10.0.0.1:80")],
        [(":method", "CONNECT"), (":authority", "a:1"), ("host", "b:1")],
    ],
)
def test_malformed_connect_fails_the_connection(headers: list[tuple[str, str]]) -> None:
    raw = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )
    raw.initiate_connection()
    server = HboneConnection(Side.SERVER)
    server.initiate()
    server.receive_data(raw.data_to_send())
    raw.receive_data(server.data_to_send())
    raw.send_headers(1, headers, end_stream=False)
    events = server.receive_data(raw.data_to_send())
    assert len(events) == 1 and isinstance(events[0], ev.ConnectionFailed), events
    assert "protocol error" in events[0].reason
    goaway = [e for e in raw.receive_data(server.data_to_send()) if hasattr(e, "error_code")]
    assert goaway and goaway[-1].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR


def test_malformed_response_fails_the_client_connection() -> None:
    client = HboneConnection(Side.CLIENT)
    client.initiate()
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    stream_id = client.open_stream(ConnectRequest(SocketAddress.parse("10.0.0.1:80")))
    server.receive_data(client.data_to_send())
    server.send_headers(stream_id, [(":status", "200"), (":path", "/")])
    events = client.receive_data(server.data_to_send())
    assert len(events) == 1 and isinstance(events[0], ev.ConnectionFailed), events
