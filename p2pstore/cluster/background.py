"""Background work of a node: one loop per service, the tasks that outlive a request, and
whether clients are being served (background work yields to them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
YIELD_EVERY = 200
log = logging.getLogger("p2pstore.background")


class ClientActivity:
    """When the last client request arrived: scrub, sync and GC slow down while clients are served."""

    def __init__(self) -> None:
        self.last_request = 0.0  # monotonic

    def mark(self) -> None:
        self.last_request = time.monotonic()

    def busy(self, within: float = 1.0) -> bool:
        """True while client requests keep arriving."""
        return time.monotonic() - self.last_request < within


class Background:
    """Tasks that run on after the request that started them (the last replica's write after the
    ack, read repairs, announcements): kept so that shutdown waits for them, and so that a
    failure is one warning line instead of an unretrieved exception."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background %s failed: %s", task.get_coro().__qualname__, exc)

    def __len__(self) -> int:
        return len(self.tasks)

    async def wait(self, timeout: float) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout)


def yielding(items: Iterable[T], every: int = YIELD_EVERY) -> Iterator[T]:
    """For long scans in a worker thread: give up the GIL every few hundred items.

    The event loop needs the GIL after every wake-up; against a busy thread it would wait the
    interpreter's 5 ms switch interval each time, which made requests ten times slower while a
    repair or handoff scan over 100,000 entries ran."""
    for i, item in enumerate(items):
        if i % every == every - 1:
            time.sleep(0)
        yield item


class BackgroundLoop:
    """Base for services that run one ``_loop`` task (repair, scrub, housekeeping)."""

    name = "background"
    _task: asyncio.Task | None = None

    async def _loop(self) -> None:  # pragma: no cover - every subclass defines its loop
        raise NotImplementedError

    def enabled(self) -> bool:
        return True

    def start(self) -> None:
        if self.enabled():
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
