"""Streaming one request body to several replicas at once.

Each replica is a *sink* fed through a small bounded queue: memory stays at a few pieces per
replica whatever the file size, and a replica that fails mid-stream is dropped without
stalling the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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

    async def feed(self, piece: bytes | None) -> None:
        if not self.failed:
            await self.queue.put(piece)


async def fan_out(body: AsyncIterator[bytes], sinks: list[Sink]) -> None:
    """Copy ``body`` into every live sink, then signal the end; cancels all sinks on error."""
    try:
        async for piece in body:
            if all(s.failed for s in sinks):
                break
            for sink in sinks:
                await sink.feed(piece)
        for sink in sinks:
            await sink.feed(None)
    except BaseException:
        for sink in sinks:
            if sink.task is not None:
                sink.task.cancel()
        for sink in sinks:
            if sink.task is not None:
                with contextlib.suppress(BaseException):
                    await sink.task
        raise


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
