"""Circuit breakers of one cluster: max requests, connections with a pending queue, retries."""

from __future__ import annotations

import asyncio

import pytest

from ambient.config.destinationrule import PoolPolicy
from ambient.waypoint.resilience.pool import ClusterLimits, Overflow


async def test_max_connections_queue_then_overflow() -> None:
    limits = ClusterLimits(PoolPolicy(max_connections=1, max_pending=1))
    await limits.acquire()  # in progress
    waiter = asyncio.ensure_future(limits.acquire())  # pending
    await asyncio.sleep(0)
    assert (limits.in_progress, limits.pending, limits.requests) == (1, 1, 2)
    with pytest.raises(Overflow, match="pending"):
        await limits.acquire()
    limits.release()  # the slot moves to the waiter
    await waiter
    assert (limits.in_progress, limits.pending, limits.requests) == (1, 0, 1)
    limits.release()
    assert (limits.in_progress, limits.pending, limits.requests) == (0, 0, 0)


async def test_max_requests_refuses_at_once() -> None:
    limits = ClusterLimits(PoolPolicy(max_requests=2))
    await limits.acquire()
    await limits.acquire()
    with pytest.raises(Overflow, match="max requests"):
        await limits.acquire()
    limits.release()
    await limits.acquire()


async def test_cancelled_waiter_leaves_the_queue() -> None:
    limits = ClusterLimits(PoolPolicy(max_connections=1, max_pending=5))
    await limits.acquire()
    waiter = asyncio.ensure_future(limits.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limits.pending, limits.requests) == (0, 1)
    limits.release()
    assert (limits.in_progress, limits.requests) == (0, 0)


async def test_waiters_are_served_in_order() -> None:
    limits = ClusterLimits(PoolPolicy(max_connections=1))
    await limits.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await limits.acquire()
        order.append(i)

    tasks = [asyncio.ensure_future(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        limits.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


def test_retry_budget() -> None:
    limits = ClusterLimits(PoolPolicy(max_retries=1))
    assert limits.try_retry()
    assert not limits.try_retry()
    limits.retry_done()
    assert limits.try_retry()
