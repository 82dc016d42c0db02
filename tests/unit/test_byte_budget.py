"""The node-wide budget of read buffers (cluster/budget.py): bytes held never pass the limit
while waiting is enough, waiters are served in order, a wait is bounded, a cancelled wait gives
nothing away."""

from __future__ import annotations

import asyncio
import random

import pytest

from p2pstore.cluster.budget import ByteBudget


async def test_held_bytes_stay_within_the_limit_under_many_readers() -> None:
    budget = ByteBudget(limit=32, max_wait=60)
    rng = random.Random(7)
    seen_over = []

    async def reader(n: int) -> None:
        for _ in range(20):
            size = rng.choice([4, 8, 16])
            await budget.acquire(size)
            seen_over.append(budget.held > budget.limit)
            await asyncio.sleep(0)  # hold it across a switch, as a send does
            if rng.random() < 0.5 and budget.try_acquire(4):  # a read-ahead, only with room
                seen_over.append(budget.held > budget.limit)
                budget.release(4)
            budget.release(size)

    await asyncio.wait_for(asyncio.gather(*(reader(i) for i in range(12))), 30)
    assert not any(seen_over)
    assert budget.held == 0 and budget.peak <= 32 and budget.waits > 0 and budget.overdrafts == 0


async def test_waiters_are_served_in_order_and_read_ahead_never_jumps_the_queue() -> None:
    budget = ByteBudget(limit=10, max_wait=60)
    await budget.acquire(8)
    order: list[str] = []

    async def want(name: str, n: int) -> None:
        await budget.acquire(n)
        order.append(name)

    first = asyncio.ensure_future(want("first", 6))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(want("second", 2))
    await asyncio.sleep(0)
    assert not budget.try_acquire(1)  # room for 1 byte, but others wait: read-ahead stays out
    budget.release(8)
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert order == ["first", "second"] and budget.held == 8


async def test_a_request_larger_than_the_budget_is_granted_alone() -> None:
    budget = ByteBudget(limit=4)
    await asyncio.wait_for(budget.acquire(10), 1)
    assert budget.held == 10
    assert not budget.try_acquire(1)
    budget.release(10)
    assert budget.try_acquire(4)


async def test_a_wait_is_bounded_then_proceeds_over_budget() -> None:
    budget = ByteBudget(limit=4, max_wait=0.05)
    await budget.acquire(4)  # held by a reader whose client stopped reading
    await asyncio.wait_for(budget.acquire(4), 5)
    assert budget.held == 8 and budget.overdrafts == 1 and budget.waits == 1


async def test_a_cancelled_wait_takes_nothing_and_lets_the_next_in() -> None:
    budget = ByteBudget(limit=8, max_wait=60)
    await budget.acquire(6)
    big = asyncio.ensure_future(budget.acquire(8))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(budget.acquire(2))  # fits, but queues behind ``big``
    await asyncio.sleep(0)
    assert not small.done()
    big.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big
    await asyncio.wait_for(small, 5)
    assert budget.held == 8
    budget.release(8)
    assert budget.held == 0 and not budget._waiters
