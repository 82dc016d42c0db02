"""The leader's sweep of abandoned multipart uploads: an upload (record and parts) with no new
entry for ``s3_upload_max_age`` is removed, as are parts a Complete or Abort through a node that
did not know them yet left behind. Leader-only like the other cluster-wide housekeeping, and
idempotent, so a brief overlap of two leaders is harmless."""

from __future__ import annotations

import asyncio
import logging

from ..cluster.background import BackgroundLoop
from ..node import Node
from . import uploads

log = logging.getLogger("p2pstore.s3")
MAX_INTERVAL = 60.0  # between sweeps (sooner with a short max age)


class UploadSweeper(BackgroundLoop):
    name = "s3-upload-sweep"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.max_age = node.config.s3_upload_max_age
        self.removed = 0

    def interval(self) -> float:
        return max(1.0, min(MAX_INTERVAL, self.max_age / 4))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            try:
                await self.sweep()
            except Exception as exc:  # a failed sweep is retried at the next one
                log.warning("sweeping multipart uploads failed: %s", exc)

    async def sweep(self) -> int:
        """Remove the stale uploads when this node leads; how many it removed."""
        if not self.node.cluster.peers.is_leader():
            return 0
        stale = uploads.stale_uploads(self.node, self.max_age)
        for bucket, upload_id in stale:
            await uploads.remove_upload(self.node, bucket, upload_id)
        if stale:
            self.removed += len(stale)
            log.info("leader removed %d multipart uploads idle for over %.0f s", len(stale), self.max_age)
        return len(stale)
