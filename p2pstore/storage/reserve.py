"""A few MiB held back on disk so that a full disk can still be emptied.

Deleting a file writes a tombstone (a few KiB of SQLite WAL) before any space comes back. On a
disk filled to the last byte that write itself fails, and the store could never be emptied
through its API. So each node keeps a small reserve file; a delete that finds the disk full
releases it and tries again, and housekeeping puts it back once there is room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("p2pstore.storage")

RESERVE_NAME = "space-reserve"
RESERVE_BYTES = 4 * 1024 * 1024


class SpaceReserve:
    def __init__(self, data_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = data_dir / RESERVE_NAME
        self.size = size

    def held(self) -> bool:
        return self.path.exists()

    def ensure(self, min_free: int) -> bool:
        """Allocate the reserve if it is missing and the disk has room for it and ``min_free``
        besides (twice the reserve, so that refilling it never brings a write to the limit).
        Returns whether it is held."""
        if self.held():
            return True
        if shutil.disk_usage(self.path.parent).free < min_free + 2 * self.size:
            return False
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:  # no room after all, or no fallocate: try again later
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.debug("space reserve not allocated: %s", exc)
            return False
        return True

    def release(self) -> bool:
        """Free the reserve (a delete needs the room); True if there was one to free."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: the space reserve was released so that deletes can proceed")
        return True
