"""The SOCKS5 listener's protocol: the whole-segment quick path answers and starts exactly
as the general handshake does (hypothesis), and handshake deadlines are kept per second."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.ztunnel import socks5
from ambient.ztunnel.deadlines import Deadlines
from ambient.ztunnel.outbound import HANDSHAKE_TIMEOUT, SocksProtocol, socks_replies


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.25
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> None:
        self.timers.append((when, callback, args))

    def run_until(self, when: float) -> None:
        self.now = when
        due = [t for t in self.timers if t[0] <= when]
        self.timers = [t for t in self.timers if t[0] > when]
        for _, callback, args in due:
            callback(*args)


class FakeTransport:
    def __init__(self, peer: str = "127.10.0.1", here: str = "127.10.0.1") -> None:
        self.extra = {"peername": (peer, 40000), "sockname": (here, 15080)}
        self.written: list[bytes] = []
        self.events: list[str] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.events.append("pause")

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")


class FakeHandler:
    def __init__(self) -> None:
        self.handshakes = Deadlines(HANDSHAKE_TIMEOUT)
        self.loop = FakeLoop()
        self.started: list[tuple[Any, ...]] = []

    def start(self, client: Any, request: Any, early: Any, *, replies: Any, peer: Any) -> None:
        self.started.append((request, bytes(early), replies, peer))


def drive(chunks: list[bytes], general: bool) -> tuple[list[bytes], list[str], list[Any]]:
    handler = FakeHandler()
    protocol = SocksProtocol(handler)  # type: ignore[arg-type]
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    if general:  # the reference: every byte through Socks5Handshake
        protocol.handshake = socks5.Socks5Handshake()
    for chunk in chunks:
        if "pause" in transport.events or "close" in transport.events:
            break
        protocol.data_received(chunk)
    return transport.written, transport.events, handler.started


GREETING = b"\x05\x01\x00"
REQUEST = b"\x05\x01\x00\x01" + bytes([10, 0, 0, 7]) + (8080).to_bytes(2, "big")


def test_greeting_and_request_in_one_segment_or_two() -> None:
    written, events, started = drive([GREETING + REQUEST], general=False)
    assert written == [] and events == ["pause"]
    ((request, early, replies, peer),) = started
    assert request == socks5.Socks5Request("10.0.0.7", 8080, False)
    assert early == b"" and peer == ("127.10.0.1", 40000)
    assert replies == socks_replies(b"\x05\x00")  # method selection owed, sent with the reply
    written, events, started = drive([GREETING, REQUEST], general=False)
    assert written == [b"\x05\x00"] and events == ["pause"]
    assert started[0][0] == request and started[0][2] == socks_replies()


def test_a_port_zero_or_an_odd_reserved_byte_takes_the_general_path() -> None:
    zero = b"\x05\x01\x00\x01" + bytes([10, 0, 0, 7]) + b"\x00\x00"
    assert socks5.quick_request(zero) is None
    assert drive([GREETING + zero], general=False) == drive([GREETING + zero], general=True)
    odd = b"\x05\x01\x07\x01" + bytes([10, 0, 0, 7]) + b"\x00\x50"
    assert socks5.quick_request(odd) is None
    assert drive([GREETING, odd], general=False) == drive([GREETING, odd], general=True)


chunk = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([GREETING, REQUEST, GREETING + REQUEST, b"\x05\x02\x00\x01", b"\x05"]),
    st.builds(
        lambda ip, port, cmd: bytes([5, cmd, 0, 1]) + bytes(ip) + port.to_bytes(2, "big"),
        st.lists(st.integers(0, 255), min_size=4, max_size=4),
        st.integers(0, 65535),
        st.sampled_from([1, 1, 1, 2]),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(chunk, min_size=1, max_size=4))
def test_the_quick_path_answers_as_the_general_handshake(chunks: list[bytes]) -> None:
    """Whatever arrives, in whatever segments: the same bytes written, the same close or
    pause, the same request started with the same replies and early data."""
    assert drive(chunks, general=False) == drive(chunks, general=True)


def test_deadlines_are_kept_per_second_and_never_early() -> None:
    loop = FakeLoop()
    deadlines = Deadlines(10.0)
    expired: list[str] = []

    class Item:
        def __init__(self, name: str) -> None:
            self.name = name

        def expired(self) -> None:
            expired.append(self.name)

    a, b, c = Item("a"), Item("b"), Item("c")
    key_a = deadlines.add(a, loop)  # type: ignore[arg-type]
    loop.now = 100.9
    deadlines.add(b, loop)  # type: ignore[arg-type]
    assert len(loop.timers) == 1  # one timer for the second both deadlines fall in
    loop.now = 101.5
    key_c = deadlines.add(c, loop)  # type: ignore[arg-type]
    deadlines.discard(key_a, a)
    assert len(deadlines) == 2
    loop.run_until(110.9)
    assert expired == []  # 10.25 s after b, but b's deadline (110.9) is not past
    loop.run_until(111.0)
    assert expired == ["b"]
    deadlines.discard(key_c, c)
    loop.run_until(112.0)
    assert expired == ["b"] and len(deadlines) == 0


async def test_a_silent_client_is_aborted_after_the_timeout() -> None:
    handler = FakeHandler()
    handler.handshakes = Deadlines(0.01)
    handler.loop = asyncio.get_running_loop()  # type: ignore[assignment]
    protocol = SocksProtocol(handler)  # type: ignore[arg-type]
    aborted = asyncio.Event()
    transport = FakeTransport()
    transport.abort = aborted.set  # type: ignore[method-assign]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        await aborted.wait()
    assert len(handler.handshakes) == 0
