"""The parent's side of a waypoint worker's control channel (``WaypointWorkers._ask``).

A real child process (``sleep``, standing in for a worker that is stuck or out of
step) and a real socket pair; the test plays the worker's end of the channel. A
worker that answers another kind than asked, reaches end of file or says nothing
in time is killed: its channel can no longer be trusted to carry the configuration.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from ambient.waypoint import workers
from ambient.waypoint.workers import WaypointWorkers, read_message, write_message


@dataclass
class Channel:
    pool: WaypointWorkers
    worker: workers._Worker
    reader: asyncio.StreamReader  # the worker's end
    writer: asyncio.StreamWriter


@pytest.fixture
async def channel() -> AsyncIterator[Channel]:
    ours, theirs = socket.socketpair()
    process = await asyncio.create_subprocess_exec("sleep", "60")
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    their_reader, their_writer = await asyncio.open_unix_connection(sock=theirs)
    # Only the channel is under test: a pool with no waypoint behind it.
    pool = WaypointWorkers.__new__(WaypointWorkers)
    worker = workers._Worker(1, process, reader, writer)
    try:
        yield Channel(pool, worker, their_reader, their_writer)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        writer.close()
        their_writer.close()


async def _answer(channel: Channel, kind: str, payload: object = None) -> str:
    asked, _ = await read_message(channel.reader)
    write_message(channel.writer, kind, payload)
    await channel.writer.drain()
    return asked


async def test_an_answer_in_step_is_returned(channel: Channel) -> None:
    answer = asyncio.ensure_future(_answer(channel, "metrics", b"up 1\n"))
    assert await channel.pool._scrape(channel.worker) == b"up 1\n"
    assert await answer == "metrics"
    assert channel.worker.alive and channel.worker.process.returncode is None


async def test_an_answer_out_of_step_kills_the_worker(channel: Channel) -> None:
    answer = asyncio.ensure_future(_answer(channel, "pong"))
    assert await channel.pool._scrape(channel.worker) == b""
    await answer
    assert not channel.worker.alive
    assert await channel.worker.process.wait() == -9


async def test_end_of_file_kills_the_worker(channel: Channel) -> None:
    channel.writer.close()
    assert await channel.pool._ask(channel.worker, "ping", "pong") is None
    assert not channel.worker.alive
    assert await channel.worker.process.wait() == -9


async def test_silence_kills_the_worker(channel: Channel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "SCRAPE_TIMEOUT", 0.2)
    assert await channel.pool._ask(channel.worker, "ping", "pong") is None
    assert not channel.worker.alive
    assert await channel.worker.process.wait() == -9


async def test_a_dead_worker_is_not_asked(channel: Channel) -> None:
    channel.worker.alive = False
    assert await channel.pool._ask(channel.worker, "ping", "pong") is None
    channel.worker.writer.close()  # the parent's end: nothing was written before it
    assert await channel.reader.read() == b""
