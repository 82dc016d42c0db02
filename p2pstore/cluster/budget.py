"""The node-wide budget of bytes that chunk buffers of reads in flight may hold.

Each GET holds the chunk it is sending and, to keep the disk or the peer busy while it sends,
the next one read ahead. Without a bound the memory grows with the number of concurrent large
GETs (four 64 MiB GETs through one node: ~12 MiB each). With it, reads beyond the budget wait
for others to send what they hold (backpressure, never a failure), and read-ahead is taken
only when the budget has room, so a read never waits while it holds a buffer.

A wait is bounded (``MAX_WAIT``): a client that stops reading keeps the buffer its GET holds
until the node's send timeout ends it, and other reads must not queue behind it for that long;
past the bound a read proceeds over budget, and ``overdrafts`` counts it.
"""

from __future__ import annotations

import asyncio
import collections
import time

MAX_WAIT = 2.0  # seconds a read waits for room before it proceeds over budget


class ByteBudget:
    """Bytes held by chunk buffers, against ``limit``; first come, first served."""

    def __init__(self, limit: int, max_wait: float = MAX_WAIT) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self.held = 0
        self.peak = 0  # the most held at once since start
        self.waits = 0  # acquisitions that had to wait for room
        self.overdrafts = 0  # acquisitions that gave up waiting and went over the limit
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, n: int) -> bool:
        return self.held == 0 or self.held + n <= self.limit

    def _take(self, n: int) -> None:
        self.held += n
        self.peak = max(self.peak, self.held)

    def try_acquire(self, n: int) -> bool:
        """Take ``n`` bytes if they fit now and nobody waits; never waits."""
        if self._waiters or not self._fits(n):
            return False
        self._take(n)
        return True

    async def acquire(self, n: int) -> None:
        """Take ``n`` bytes, waiting (in turn, at most ``max_wait``) until they fit. A request
        larger than the whole budget is granted when nothing else is held."""
        if self.try_acquire(n):
            return
        self.waits += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, waiter))
        deadline = time.monotonic() + self.max_wait
        try:
            await asyncio.wait_for(asyncio.shield(waiter), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            if waiter.done():  # granted just as the wait ended: the bytes are ours
                return
            waiter.cancel()
            self._drop(waiter)
            self.overdrafts += 1
            self._take(n)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(n)  # granted, but the reader is gone
            else:
                waiter.cancel()
                self._drop(waiter)
            raise

    def release(self, n: int) -> None:
        """Give back ``n`` bytes and wake the waiters that now fit, in order."""
        self.held = max(0, self.held - n)
        self._wake()

    def _drop(self, waiter: asyncio.Future[None]) -> None:
        self._waiters = collections.deque((n, w) for n, w in self._waiters if w is not waiter)
        self._wake()  # the one behind it may fit now

    def _wake(self) -> None:
        while self._waiters:
            n, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if not self._fits(n):
                return
            self._waiters.popleft()
            self._take(n)
            waiter.set_result(None)

    def stats(self) -> dict[str, int]:
        return {"limit": self.limit, "held": self.held, "peak": self.peak, "waits": self.waits,
                "overdrafts": self.overdrafts}  # fmt: skip
