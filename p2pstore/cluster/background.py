"""One background loop per service, started with the node and cancelled cleanly at shutdown."""

from __future__ import annotations

import asyncio
import contextlib


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
