"""Content-addressed chunks on disk: where file bytes above SQLite's small chunks live.

A chunk is named by the sha256 of its bytes. A chunk written whole (``write``: one-phase
writes, repairs) is a record appended to a segment file (``segments.SegmentStore``); a chunk
staged piece by piece for a large upload becomes a file of its own, written tmp -> fsync ->
rename -> dir fsync. Either way a chunk is absent or holds exactly the bytes its name promises
(until the disk rots, which reads and the scrubber detect). Identical chunks are stored once.
All methods here block: callers run them in a thread.

Reads check a chunk against its *read sum* (xxh3-128, see ``read_sum``) when the node recorded
one from the bytes whose sha256 it verified at write time, and against the sha256 otherwise.
The scrubber always checks the sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import xxhash

from ..errors import CorruptData
from .segments import MAX_RECORD, SegmentStore, fsync_dir, write_buffers

log = logging.getLogger(__name__)

READ_PIECE = 1 << 20  # bytes per piece when a chunk is read to be sent

HEX = set("0123456789abcdef")

Buffer: TypeAlias = bytes | bytearray | memoryview
Body: TypeAlias = Buffer | Sequence[Buffer]  # one buffer, or the pieces it arrived in


def pieces_of(body: Body) -> Sequence[Buffer]:
    """``body`` as a sequence of buffers: a body kept in the pieces it arrived in is written,
    hashed and sent piece by piece, never joined into one more copy of itself."""
    return (body,) if isinstance(body, bytes | bytearray | memoryview) else body


def body_size(body: Body) -> int:
    return sum(len(p) for p in pieces_of(body))


def sha256_of(body: Body) -> str:
    digest = hashlib.sha256()
    for piece in pieces_of(body):
        digest.update(piece)
    return digest.hexdigest()


def write_all(fd: int, body: Body) -> None:
    """Write every byte of ``body`` to ``fd`` at its position with as few ``writev`` calls as
    it takes (one for up to IOV_BATCH pieces): no user-space copy, unlike ``b"".join``."""
    write_buffers(fd, pieces_of(body))


def is_sha256_hex(value: object) -> bool:
    """True for a lower-case 64-digit hex string."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= HEX


def read_sum(data: Body) -> bytes:
    """The 16-byte xxh3-128 of a chunk's bytes, recorded when the chunk is written (from the
    same bytes its sha256 name was computed or checked from) and checked on every read: it finds
    flipped or lost bytes as surely as the sha256 (odds of missing one: 2**-128), at 0.03 ms
    per MiB instead of 0.72 here. The sha256 still names the chunk and is what peers check."""
    if isinstance(data, bytes | bytearray | memoryview):
        return xxhash.xxh3_128_digest(data)
    running = xxhash.xxh3_128()
    for piece in data:
        running.update(piece)
    return running.digest()


def new_read_sum() -> Any:
    """A running ``read_sum`` for bytes that arrive in pieces."""
    return xxhash.xxh3_128()


def drop_cached(fd: int) -> None:
    """Let the kernel drop a durable (fsynced: clean) file's pages from the page cache. A
    replica's copy of a write is rarely read soon (reads go through one replica, usually the
    gateway that took the write), and cached three times over the cluster it only crowds out
    what is read; on a VM whose host backs memory lazily, new page-cache pages also cost a trip
    to the hypervisor each, while dropped ones are reused at once (docs/benchmarks.md)."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class ChunkStore:
    """Chunk files under ``root/chunks/ab/<sha>``, chunk records under ``root/segments``, temp
    files under ``root/tmp``. Every look-up tries the files first, then the segments."""

    def __init__(self, root: Path, fsync: str = "always") -> None:
        self.root = root
        self.chunk_dir = root / "chunks"
        self._prefix = f"{self.chunk_dir}{os.sep}"
        self.tmp_dir = root / "tmp"
        self.quarantine_dir = root / "quarantine"
        self.fsync = fsync
        for d in (self.chunk_dir, self.tmp_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.segments = SegmentStore(root / "segments", fsync)

    def close(self) -> None:
        self.segments.close()

    def path(self, sha: str) -> Path:
        return self.chunk_dir / sha[:2] / sha

    def file(self, sha: str) -> str:
        """``path(sha)`` as a string: reads and lookups check a chunk per request, and building
        a Path costs more than the stat itself."""
        return f"{self._prefix}{sha[:2]}/{sha}"

    def has(self, sha: str) -> bool:
        return os.path.exists(self.file(sha)) or self.segments.locate(sha) is not None

    def length(self, sha: str) -> int | None:
        """Size of a stored chunk, or None when absent (no read, no verification)."""
        try:
            return os.stat(self.file(sha)).st_size
        except FileNotFoundError:
            loc = self.segments.locate(sha)
            return None if loc is None else loc.length

    def touched(self, sha: str) -> float | None:
        """When a stored chunk was written or last found already stored (None: absent)."""
        try:
            return os.stat(self.file(sha)).st_mtime
        except FileNotFoundError:
            return self.segments.touched(sha)

    def touch(self, sha: str, when: float | None = None) -> bool:
        """Mark a stored chunk in use at ``when`` (now), so GC leaves it alone for a while;
        False when it is not here."""
        try:
            os.utime(self.file(sha), None if when is None else (when, when))
            return True
        except FileNotFoundError:
            return self.segments.touch(sha, when)

    def clean_tmp(self) -> int:
        """Remove temp files left by a crash or an aborted upload; return how many."""
        removed = 0
        for entry in self.tmp_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed

    def write(
        self, data: Body, sha: str | None = None, cached: bool = True, fast: bytes | None = None
    ) -> str:
        """Store one chunk durably and return its sha256 (computed here unless given): a record
        appended to a segment, with its read sum ``fast`` (computed here unless given).
        ``data`` may be the pieces the chunk arrived in (written with ``pwritev``, not joined).
        ``cached=False``: once fsynced, its pages leave the page cache (``drop_cached``)."""
        if sha is None:
            sha = sha256_of(data)
        if self.touch(sha):  # already stored: mark it in use so GC leaves it alone for a while
            return sha
        if body_size(data) <= MAX_RECORD:
            self.segments.append(sha, pieces_of(data), fast or read_sum(data), cached)
            return sha
        return self.write_file(data, sha, cached)

    def write_file(self, data: Body, sha: str, cached: bool = True) -> str:
        """Store one chunk as a file of its own (tmp -> fsync -> rename -> dir fsync)."""
        final = self.path(sha)
        final.parent.mkdir(exist_ok=True)
        tmp = self.tmp_dir / f"{sha}.{uuid.uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                write_all(fd, data)
                if self.fsync != "never":
                    os.fsync(fd)
                    if not cached:
                        drop_cached(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync == "always":
            fsync_dir(final.parent)
        return sha

    def read(self, sha: str, known_sum: bytes | None = None) -> tuple[bytes, bytes | None]:
        """Read a chunk and verify it against ``known_sum`` (its recorded read sum) or else its
        sha256; raise CorruptData on mismatch, FileNotFoundError if absent. Returns the bytes
        and, when they were verified by sha256, their read sum (for the caller to record).

        A recorded sum can only let good bytes through sooner: on a mismatch the sha256
        decides, so a wrong sum never makes a good chunk look corrupt.
        """
        blocks = self._blocks(sha, sys.maxsize)
        data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        if known_sum is not None and read_sum(data) == known_sum:
            return data, None
        if hashlib.sha256(data).hexdigest() != sha:
            raise CorruptData(f"chunk {sha[:12]} is corrupt", {"chunk": sha})
        return data, read_sum(data)

    def read_pieces(
        self, sha: str, known_sum: bytes | None = None, piece: int = READ_PIECE
    ) -> tuple[list[bytes], bytes | None]:
        """``read``, but the bytes come as pieces of at most ``piece`` bytes, all verified
        before any is returned. A reader that sends them one by one frees each as it goes
        instead of holding the whole chunk until its last byte is out, and 1 MiB buffers are
        reused by the allocator where 4 MiB ones are mapped and unmapped each time."""
        pieces = self._blocks(sha, piece)
        fast = new_read_sum()
        for block in pieces:
            fast.update(block)
        if known_sum is not None and fast.digest() == known_sum:
            return pieces, None
        if sha256_of(pieces) != sha:
            raise CorruptData(f"chunk {sha[:12]} is corrupt", {"chunk": sha})
        return pieces, fast.digest()

    def _blocks(self, sha: str, piece: int) -> list[bytes]:
        """A chunk's bytes, unverified, in blocks of at most ``piece``, from its file or else its
        segment record; FileNotFoundError when it is in neither."""
        try:
            with open(self.file(sha), "rb", buffering=0) as fh:
                left = os.fstat(fh.fileno()).st_size  # chunk files never change once named
                blocks: list[bytes] = []
                while left > 0 and (block := fh.read(min(piece, left))):
                    blocks.append(block)
                    left -= len(block)
                return blocks
        except FileNotFoundError:
            found = self.segments.read(sha, piece)
            if found is None:
                raise
            return found

    def verify(self, sha: str) -> bytes | None:
        """The chunk's read sum when it exists and its bytes hash to its name (streamed, low
        memory); None otherwise."""
        digest, fast = hashlib.sha256(), new_read_sum()
        try:
            with open(self.path(sha), "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    fast.update(block)
        except FileNotFoundError:
            pieces = self.segments.read(sha, 1 << 20)
            if pieces is None:
                return None
            for block in pieces:
                digest.update(block)
                fast.update(block)
        return fast.digest() if digest.hexdigest() == sha else None

    def quarantine(self, sha: str) -> Path | None:
        """Move a bad chunk aside (kept for inspection) so it is never served again."""
        src = self.path(sha)
        dest = self.quarantine_dir / f"{sha}.{int(time.time())}"
        try:
            os.replace(src, dest)
        except FileNotFoundError:
            pieces = self.segments.read(sha, MAX_RECORD)
            if not self.segments.delete(sha):
                return None
            if pieces is None:  # its segment file is gone: forgotten, for repair to refill
                log.warning("forgot chunk %s: its segment file is gone", sha[:12])
                return None
            dest.write_bytes(b"".join(pieces))
        log.warning("quarantined corrupt chunk %s", sha[:12])
        return dest

    def delete(self, sha: str) -> None:
        self.path(sha).unlink(missing_ok=True)
        self.segments.delete(sha)

    def compact(self) -> int:
        """Reclaim one mostly dead segment (``SegmentStore.compact``); bytes freed."""
        return self.segments.compact(self.quarantine_dir)

    def iter_shas(self):
        """Every chunk name on disk (used by start-up checks, the scrubber and GC); a chunk
        both in a file and in a segment comes twice."""
        for sub in self.chunk_dir.iterdir():
            if sub.is_dir():
                for f in sub.iterdir():
                    if is_sha256_hex(f.name):
                        yield f.name
        yield from self.segments.iter_shas()

    def names_after(self, after: str, limit: int) -> list[str]:
        """Up to ``limit`` chunk names after ``after``, in name order: one page of a walk over
        every stored chunk that keeps only its cursor (the orphan scan), never all names."""
        try:
            subs = sorted(e.name for e in os.scandir(self.chunk_dir) if e.is_dir() and e.name >= after[:2])
        except FileNotFoundError:
            subs = []
        out: list[str] = []
        for sub in subs:
            try:
                names = os.listdir(self.chunk_dir / sub)
            except FileNotFoundError:
                continue
            out += sorted(n for n in names if n > after and is_sha256_hex(n))[: limit - len(out)]
            if len(out) >= limit:
                break
        # Each source's page holds its first ``limit`` names: together, the next ``limit``.
        return sorted({*out, *self.segments.names_after(after, limit)})[:limit]

    def disk_usage(self) -> dict[str, int]:
        usage = shutil.disk_usage(self.root)
        return {"total": usage.total, "used": usage.used, "free": usage.free}
