"""The waypoint's HTTP/1.1 timeouts: idle keep-alive connections, slow request heads, idle bodies.

The constants are Envoy-like (1 h, 60 s, 5 min); here they are shortened to a
fraction of a second. A waypoint without them keeps each of these tunnels
open for ever: every wait below is bounded and fails the test instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ambient.hbone.errors import HboneError
from ambient.hbone.pool import ConnectionPool
from ambient.waypoint.proxy import http1
from tests.component.waypoint.harness import WaypointMesh, start_mesh
from tests.component.waypoint.test_http1_codec import Responses, tunnel
from tests.pki import make_ca

SHORT = 0.3
BOUND = 10.0  # a waypoint without the timeout never ends the tunnel: fail after this


@pytest.fixture
async def mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WaypointMesh]:
    for name in ("IDLE_TIMEOUT", "REQUEST_HEADERS_TIMEOUT", "STREAM_IDLE_TIMEOUT"):
        monkeypatch.setattr(http1, name, SHORT, raising=False)
    async for m in start_mesh(make_ca(tmp_path)):
        yield m


async def ended(responses: Responses) -> bytes:
    """Everything the waypoint sends until it ends the tunnel (EOF or reset), bounded."""
    rest = responses.buffer
    try:
        async with asyncio.timeout(BOUND):
            while data := await responses.stream.read():
                rest += data
    except HboneError:
        pass  # a reset ends it too
    return rest


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-continue"])
async def test_an_idle_keep_alive_connection_is_ended(mesh: WaypointMesh, expect: bool) -> None:
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        responses = Responses(stream)
        if expect:  # the 100-continue path
            stream.write(
                b"POST /hello HTTP/1.1\r\nhost: orders\r\nexpect: 100-continue\r\n"
                b"content-length: 2\r\n\r\n"
            )
            assert (await responses.next())[0] == 100
            stream.write(b"hi")
        else:
            stream.write(b"GET /hello HTTP/1.1\r\nhost: orders\r\n\r\n")
        status, headers, body = await responses.next()
        assert status == 200 and "connection" not in headers  # kept alive
        assert json.loads(body)["path"] == "/hello"
        assert await ended(responses) == b""  # then ended, with nothing more said
    finally:
        await pool.close()


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-continue"])
async def test_a_request_head_that_does_not_finish_is_408(mesh: WaypointMesh, expect: bool) -> None:
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        responses = Responses(stream)
        if expect:
            stream.write(
                b"POST /hello HTTP/1.1\r\nhost: orders\r\nexpect: 100-continue\r\n"
                b"content-length: 2\r\n\r\n"
            )
            assert (await responses.next())[0] == 100
            stream.write(b"hi")
            assert (await responses.next())[0] == 200
        stream.write(b"GET /slow HTTP/1.1\r\nhost: orders\r\nx-trickle: a")  # never finished
        async with asyncio.timeout(BOUND):
            status, headers, _ = await responses.next()
        assert status == 408 and headers["connection"] == "close"
        assert await ended(responses) == b""
    finally:
        await pool.close()
    assert not any(r["path"] == "/slow" for a in mesh.apps for r in a.requests)


async def test_an_idle_request_body_is_aborted(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        stream.write(b"POST /hello HTTP/1.1\r\nhost: orders\r\ncontent-length: 10\r\n\r\nabc")
        rest = await ended(Responses(stream))
        assert not rest.startswith(b"HTTP/1.1 200"), rest
    finally:
        await pool.close()


async def test_a_busy_keep_alive_connection_outlives_the_idle_timeout(
    mesh: WaypointMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle timeout counts each wait for a request, not the connection's age: requests
    one after another for three times the timeout all go on the same connection."""
    monkeypatch.setattr(http1, "IDLE_TIMEOUT", 1.0)  # a gap this long would be the machine's
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        responses = Responses(stream)
        loop = asyncio.get_running_loop()
        start, served = loop.time(), 0
        async with asyncio.timeout(BOUND + 10):
            while loop.time() - start < 3.5 and served < 1000:
                stream.write(b"GET /hello HTTP/1.1\r\nhost: orders\r\n\r\n")
                status, headers, _ = await responses.next()
                assert status == 200 and "connection" not in headers
                served += 1
                await asyncio.sleep(0.05)  # pacing: short idle waits, 3.5 s of them in all
        assert loop.time() - start >= 3.5, f"only {served} requests"
        assert await ended(responses) == b""  # idle at last: ended
    finally:
        await pool.close()
