"""The retry buffer: replay what was read, give up past the limit."""

from __future__ import annotations

import asyncio

from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.messages import BytesBody
from ambient.waypoint.proxy.replay import RETRY_BODY_LIMIT, ReplayableBody, WholeBody


class Chunks:
    trailers: Headers = ()

    def __init__(self, *chunks: bytes, length: int | None = None) -> None:
        self.chunks = list(chunks)
        self.length = length
        self.empty = False

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def ready(self) -> bytes | None:
        return None if self.chunks else b""


async def read_all(body: ReplayableBody) -> bytes:
    out = b""
    while chunk := await body.read():
        out += chunk
    return out


async def test_replay_after_partial_read_continues_with_the_rest() -> None:
    body = ReplayableBody(Chunks(b"ab", b"cd", b"ef"))
    assert await body.read() == b"ab"  # the first attempt failed after one chunk
    body.rewind()
    assert await read_all(body) == b"abcdef"
    body.rewind()
    assert await read_all(body) == b"abcdef"


async def test_over_the_limit_is_not_replayable() -> None:
    body = ReplayableBody(Chunks(b"x" * 6, b"y" * 6), limit=10)
    before = body.replayable
    await read_all(body)
    assert (before, body.replayable) == (True, False)
    assert not ReplayableBody(Chunks(length=11), limit=10).replayable  # known too big up front


async def test_ready_includes_the_replayed_part() -> None:
    body = ReplayableBody(BytesBody(b"hello"))
    assert body.ready() == b"hello"
    body.rewind()
    assert body.ready() == b"hello"
    body.stop_keeping()
    assert not body.replayable


def test_whole_body_is_given_whole_to_every_attempt() -> None:
    async def run() -> None:
        source = BytesBody(b"abc", trailers=(("x-t", "1"),))
        body = WholeBody(b"abc", source)
        assert (body.length, body.empty, body.trailers) == (3, False, (("x-t", "1"),))
        kept = body.replayable
        assert body.ready() == b"abc" and body.ready() == b"" and await body.read() == b""
        body.rewind()
        assert await body.read() == b"abc" and await body.read() == b""
        body.rewind()
        assert body.ready() == b"abc"
        body.stop_keeping()
        assert (kept, body.replayable) == (True, False)
        assert not WholeBody(b"x" * (RETRY_BODY_LIMIT + 1), source).replayable

    asyncio.run(run())
