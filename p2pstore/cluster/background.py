"""One background loop per service, started with the node and cancelled cleanly at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
YIELD_EVERY = 200


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
