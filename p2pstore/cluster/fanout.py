"""Streaming one request body to several replicas at once.

Each replica is a *sink* fed through a small bounded queue: memory stays at a few pieces per
replica whatever the file size. A replica that fails mid-stream is dropped without stalling the
others, and so is one that stops reading: a piece that waits longer than ``stall`` seconds for
room in its queue drops that replica from the write (the others go on; repair completes it later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("p2pstore.fanout")

QUEUE_PIECES = 8


@dataclass
class Sink:
    """One replica receiving the stream; ``task`` resolves to what the replica staged."""

    node_id: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_PIECES))
    task: asyncio.Task | None = None
    failed: bool = False

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            piece = await self.queue.get()
            if piece is None:
                return
            yield piece

    def start(self, consume: Callable[[AsyncIterator[bytes]], Awaitable[Any]]) -> None:
        self.task = asyncio.ensure_future(consume(self.body()))
        self.task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            self.failed = True
            while not self.queue.empty():  # unblock a producer waiting for space
                self.queue.get_nowait()

    async def feed(self, piece: bytes | None, stall: float) -> None:
        """Queue ``piece``; a replica that leaves no room for ``stall`` seconds is dropped."""
        if self.failed:
            return
        try:
            self.queue.put_nowait(piece)  # the usual case: room in the queue, no timer
            return
        except asyncio.QueueFull:
            pass
        try:
            async with asyncio.timeout(stall):
                await self.queue.put(piece)
        except TimeoutError:
            log.warning("replica %s stopped reading for %.1f s: dropped from this write", self.node_id, stall)
            self.drop()

    def drop(self) -> None:
        """Give up on this replica: its transfer is cancelled (the write goes on without it)."""
        self.failed = True
        if self.task is not None:
            self.task.cancel()


async def fan_out(body: AsyncIterator[bytes], sinks: list[Sink], stall: float) -> None:
    """Copy ``body`` into every live sink, then signal the end; cancels all sinks on error."""
    try:
        async for piece in body:
            if all(s.failed for s in sinks):
                break
            for sink in sinks:
                await sink.feed(piece, stall)
        for sink in sinks:
            await sink.feed(None, stall)
    except BaseException:
        for sink in sinks:
            if sink.task is not None:
                sink.task.cancel()
        for sink in sinks:
            if sink.task is not None:
                with contextlib.suppress(BaseException):
                    await sink.task
        raise


async def settle(sinks: list[Sink], need: int, grace: float) -> list[Any]:
    """Every sink's result (or its exception), waiting for all of them, except that once ``need``
    succeeded the rest get ``grace`` seconds more: a replica that took the whole body but does not
    answer (frozen after its socket buffers swallowed the data) is dropped, not waited for."""
    tasks = [s.task for s in sinks if s.task is not None]
    pending = set(tasks)
    while pending:
        ok = sum(1 for t in tasks if t.done() and not t.cancelled() and t.exception() is None)
        if ok >= need:
            _, pending = await asyncio.wait(pending, timeout=grace)
            for sink in sinks:
                if sink.task in pending:
                    log.warning("replica %s did not answer within %.1f s: dropped from this write",
                                sink.node_id, grace)  # fmt: skip
                    sink.drop()
            if pending:
                await asyncio.wait(pending)  # the cancellations land
            break
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    return [t.exception() or t.result() if not t.cancelled() else asyncio.CancelledError() for t in tasks]


async def first_n(tasks: list[asyncio.Future], n: int) -> tuple[list[Any], list[BaseException]]:
    """Wait until ``n`` tasks succeeded or too many failed; returns (results, errors) so far.

    The remaining tasks keep running: replication to the last replicas continues in the
    background after the client has its answer.
    """
    results: list[Any] = []
    errors: list[BaseException] = []
    pending = set(tasks)
    while pending and len(results) < n and len(errors) <= len(tasks) - n:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t.cancelled():
                errors.append(asyncio.CancelledError())
            elif t.exception() is not None:
                errors.append(t.exception())  # type: ignore[arg-type]
            else:
                results.append(t.result())
    return results, errors
