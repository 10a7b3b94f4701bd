"""A long-running command's start raced against its stop signal (``start_unless_stopped``)."""

from __future__ import annotations

import asyncio

import pytest

from ambient.local.nodeproxy import start_unless_stopped


async def test_a_start_that_finishes_first_gives_its_result() -> None:
    async def start() -> str:
        return "started"

    starting = await start_unless_stopped(start(), asyncio.Event())
    assert starting is not None and starting.result() == "started"


async def test_a_start_that_fails_first_gives_its_error_to_the_caller() -> None:
    async def start() -> str:
        raise OSError("address in use")

    starting = await start_unless_stopped(start(), asyncio.Event())
    assert starting is not None
    with pytest.raises(OSError, match="address in use"):
        starting.result()


async def test_a_stop_that_comes_first_cancels_the_start() -> None:
    stop = asyncio.Event()
    began = asyncio.Event()
    cancelled = False

    async def start() -> str:
        nonlocal cancelled
        began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise
        return "never"

    racing = asyncio.ensure_future(start_unless_stopped(start(), stop))
    await began.wait()
    stop.set()
    assert await racing is None
    assert cancelled
