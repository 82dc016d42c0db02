"""Cutting an upload's bytes into staged chunk files as they arrive.

Each chunk is written to a temp file piece by piece while its sha256 (its name) and read sum
(what reads check it against: chunks.read_sum) are computed, fsynced when full, and then renamed
to its sha under the upload's staging folder (promoted into the chunk store on commit). A node
therefore holds only the pieces in hand for an upload, not a whole chunk: with 4 MiB chunks,
accumulating each chunk in memory first cost ~12 MiB per upload in flight (the growing buffer,
the cut-off chunk, the next one filling) and two extra copies of every byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from .chunks import ChunkStore, drop_cached, new_read_sum


class ChunkStager:
    """One upload's chunk files. ``feed`` and ``close`` do blocking I/O: call them from an I/O
    thread, one at a time and in order (the caller awaits each before the next)."""

    def __init__(
        self, staging: Path, chunk_size: int, fsync: bool, store: ChunkStore, whole: Any = None,
        cached: bool = True,
    ) -> None:  # fmt: skip
        self.staging = staging
        self.chunk_size = chunk_size
        self.fsync = fsync
        self.cached = cached  # False: fsynced chunks leave the page cache (chunks.drop_cached)
        self.store = store
        self.whole = whole  # the whole file's running sha256, or None (the gateway computes it)
        self.shas: list[str] = []
        self.sums: dict[str, bytes] = {}  # chunk sha -> read sum of the same bytes
        self._fh: BinaryIO | None = None
        self._tmp: Path | None = None
        self._digest: Any = None
        self._sum: Any = None
        self._filled = 0

    def feed(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                if self._fh is None:
                    self._open()
                part = view[: self.chunk_size - self._filled]
                self._fh.write(part)  # type: ignore[union-attr]
                self._digest.update(part)
                self._sum.update(part)
                if self.whole is not None:
                    self.whole.update(part)
                self._filled += len(part)
                view = view[len(part) :]
                if self._filled == self.chunk_size:
                    self._finish()

    def close(self) -> list[str]:
        """Finish the last (partial) chunk; the sha256 names of all chunks, in order."""
        if self._fh is not None:
            self._finish()
        return self.shas

    def abort(self) -> None:
        """Close what is open; the caller removes the staging folder. Never raises: on a full
        disk, closing flushes buffered bytes and fails again (the file is closed all the same),
        and a cleanup that raised would leave the staging folder behind."""
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()

    def _open(self) -> None:
        self.staging.mkdir(exist_ok=True)
        self._tmp = self.staging / f"part-{uuid.uuid4().hex}"
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in _finish or abort
        self._digest = hashlib.sha256()
        self._sum = new_read_sum()
        self._filled = 0

    def _finish(self) -> None:
        fh, tmp = self._fh, self._tmp
        assert fh is not None and tmp is not None
        self._fh = self._tmp = None
        sha = self._digest.hexdigest()
        self.shas.append(sha)
        self.sums[sha] = self._sum.digest()
        try:
            try:
                os.utime(self.store.file(sha))  # stored already (dedupe): mark it in use for GC
            except FileNotFoundError:
                pass
            else:
                return
            if (self.staging / sha).exists():  # the same chunk twice in one file
                return
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
                if not self.cached:
                    drop_cached(fh.fileno())
            fh.close()
            os.replace(tmp, self.staging / sha)
        finally:
            with contextlib.suppress(OSError):  # closed above unless we return or fail early
                fh.close()
            tmp.unlink(missing_ok=True)
