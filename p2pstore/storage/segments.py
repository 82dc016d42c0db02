"""Append-only segment files: where chunks written whole (one-phase writes, repairs) live.

A chunk file costs an inode, a rename and a directory fsync per chunk; the kernel's share of
that was the largest single cost of a 1 MiB PUT (docs/benchmarks.md). Here a chunk is one
*record* appended to the node's active segment file (``segments/<id>.seg``): a 64-byte head
(magic, the chunk's sha256, its length, its xxh3-128 read sum), its bytes and zeros up to the
next multiple of 4 KiB, followed by one ``fdatasync`` that concurrent writers share. Records are
written in offset order under one lock, so a segment never has a hole: a record whose
``fdatasync`` returned has every record before it on disk too.

Records that are to stay in the page cache (the gateway's own copy of a write) and records that
are not (the other replicas', repairs, compaction) go to segments of their own. The latter is
written with O_DIRECT from one reused, aligned buffer: no page-cache pages to fill and drop
again (on a VM whose host backs memory lazily, new pages cost a trip to the hypervisor each).
Where O_DIRECT is refused (tmpfs) its pages are dropped after the sync instead, in whole
folios (the page cache keeps up to 2 MiB together; a range that cuts one keeps it cached).

Where each chunk is lives in an SQLite index beside the segments (``segments/index.sqlite3``,
WAL, not fsynced per write). The segment files are the truth: a segment whose records were not
all known to be indexed when the node stopped (``indexed = 0``) is scanned at start-up, and
every whole record the index lacks is checked against its head's read sum and indexed again
(a torn record at the end of a crash is never indexed). A process never appends to a segment
it did not create, so a torn tail is never built upon. A crash can bring a deleted record
back; it is then an orphan that garbage collection deletes again.

Deleting a chunk only drops its index row; ``compact`` reclaims the space of a sealed segment
whose live bytes fell under half its size by copying its live records to the active segment
(checked against their read sums on the way), syncing the index (a WAL checkpoint), and only
then unlinking it. Readers that meet a segment just unlinked look the chunk up again.

Every method blocks (callers run them in a thread); one lock serialises the index connection.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import xxhash

log = logging.getLogger(__name__)

MAGIC = b"p2pseg01"
HEAD = struct.Struct(">8s32sQ16s")  # magic, sha256 (raw), length, xxh3-128 of the bytes
ROLL_BYTES = 256 * 1024 * 1024  # a segment this large is sealed and a new one started
MAX_RECORD = 64 * 1024 * 1024  # larger lengths in a head mean the head is not a head
COMPACT_BELOW = 0.5  # a sealed segment with less than this share of live bytes is compacted
INDEX_NAME = "index.sqlite3"
ALIGN = 4096  # every record starts at a multiple of this (what O_DIRECT writes need)
FOLIO = 2 * 1024 * 1024  # the page cache's largest folio: what dropping a record rounds out to
DONTNEED = os.POSIX_FADV_DONTNEED
KEEP_BUFFER = 8 * 1024 * 1024  # a larger O_DIRECT buffer is freed after its write
IOV_BATCH = 512  # buffers per writev/pwritev (below the kernel's IOV_MAX of 1024)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    sha TEXT PRIMARY KEY,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,  -- of the chunk's first byte (its head is just before)
    length INTEGER NOT NULL,
    touched REAL NOT NULL     -- written or last found already stored (GC's grace period)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_segment ON records (segment, offset);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    live INTEGER NOT NULL DEFAULT 0,    -- bytes of indexed records (heads and padding included)
    indexed INTEGER NOT NULL DEFAULT 0  -- 1: sealed, every record it holds is indexed
);
"""
FIND = "SELECT segment, offset, length FROM records WHERE sha = ?"
FIND_AT = "SELECT length FROM records WHERE sha = ? AND segment = ? AND offset = ?"
NAMES_AFTER = "SELECT sha FROM records WHERE sha > ? ORDER BY sha LIMIT ?"
ADD_LIVE = "UPDATE segments SET live = live + ? WHERE id = ?"
INSERT = "INSERT OR IGNORE INTO records (sha, segment, offset, length, touched) VALUES (?, ?, ?, ?, ?)"
MOVE = "UPDATE records SET segment = ?, offset = ? WHERE sha = ? AND segment = ? AND offset = ?"
SEGMENTS = "SELECT id, live, indexed FROM segments"

Buffer: TypeAlias = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Location:
    """Where a chunk's bytes are: ``length`` bytes at ``offset`` of segment file ``path``."""

    path: str
    offset: int
    length: int


@dataclass
class _Active:
    id: int
    fd: int
    end: int = 0
    writers: int = 0  # appends whose index row is not written yet
    sealed: bool = False
    direct: bool = False  # opened with O_DIRECT: records bypass the page cache
    synced: int = 0  # bytes known durable (fdatasync returned after they were written)
    syncing: bool = False  # an fdatasync of this segment is running


def span(length: int) -> int:
    """The bytes a record of a ``length``-byte chunk takes: head, bytes, padding to ALIGN."""
    return -(-(HEAD.size + length) // ALIGN) * ALIGN


def write_buffers(fd: int, buffers: Sequence[Buffer], offset: int | None = None) -> None:
    """Write every byte of ``buffers`` at ``offset`` (``pwritev``), or at the file's position
    (``writev``) when None, with as few calls as it takes; a short write resumes mid-buffer."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while views:
        batch = views[:IOV_BATCH]
        written = os.writev(fd, batch) if offset is None else os.pwritev(fd, batch, offset)
        if offset is not None:
            offset += written
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0


class SegmentStore:
    """Chunk records in ``folder/<id>.seg``, indexed in ``folder/index.sqlite3``."""

    def __init__(self, folder: Path, fsync: str = "always", roll_bytes: int = ROLL_BYTES) -> None:
        self.folder = folder
        self.fsync = fsync
        self.roll_bytes = roll_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._db_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._sync = threading.Condition()
        self._buffer = mmap.mmap(-1, ALIGN)  # O_DIRECT writes' aligned buffer (page-aligned)
        self._db = sqlite3.connect(folder / INDEX_NAME, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # the segments are the truth (see above)
        self._db.executescript(SCHEMA)
        self.recovered = self._recover()
        # Records kept in the page cache and records kept out of it: segments of their own.
        self._active: dict[bool, _Active] = {}

    def path(self, segment: int) -> str:
        return f"{self.folder}{os.sep}{segment:08d}.seg"

    # ---- start-up ----
    def _recover(self) -> int:
        """Index what segments not known to be fully indexed hold; forget segments whose file is
        gone. Returns how many records were indexed again."""
        on_disk = sorted(int(p.stem) for p in self.folder.glob("*.seg") if p.stem.isdigit())
        with self._db_lock:
            known = dict(self._db.execute("SELECT id, indexed FROM segments").fetchall())
            for gone in set(known) - set(on_disk):
                self._db.execute("DELETE FROM records WHERE segment = ?", (gone,))
                self._db.execute("DELETE FROM segments WHERE id = ?", (gone,))
        found = 0
        for segment in on_disk:
            if known.get(segment) == 1:
                continue
            with self._db_lock:
                self._db.execute("INSERT OR IGNORE INTO segments (id) VALUES (?)", (segment,))
            found += self._scan(segment)
            with self._db_lock:
                self._db.execute("UPDATE segments SET indexed = 1 WHERE id = ?", (segment,))
        if found:
            log.warning("indexed %d chunk records again from segments a crash left", found)
        return found

    def _scan(self, segment: int) -> int:
        """Index every whole record of ``segment`` that the index lacks; stop at the first head
        that does not parse (the torn end of an interrupted append)."""
        found = 0
        with open(self.path(segment), "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            offset = 0
            while offset + HEAD.size <= size:
                magic, raw, length, fast = HEAD.unpack(os.pread(fh.fileno(), HEAD.size, offset))
                start = offset + HEAD.size
                if magic != MAGIC or length > MAX_RECORD or start + length > size:
                    break
                sha = raw.hex()
                data = os.pread(fh.fileno(), length, start) if self.locate(sha) is None else None
                if data is not None and xxhash.xxh3_128_digest(data) == fast:
                    with self._transaction():
                        self._insert(sha, segment, start, length, time.time())
                    found += 1
                offset += span(length)
        return found

    def _start_segment(self, cached: bool) -> _Active:
        """A new, empty active segment (never one a previous process appended to). One for
        records not to be cached is opened with O_DIRECT where the file system allows it."""
        with self._db_lock:
            row = self._db.execute("SELECT max(id) FROM segments").fetchone()
            segment = (row[0] or 0) + 1
            self._db.execute("INSERT INTO segments (id) VALUES (?)", (segment,))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        direct = not cached and self.fsync != "never" and hasattr(os, "O_DIRECT")
        try:
            fd = self._open(self.path(segment), flags | (os.O_DIRECT if direct else 0))
        except OSError:  # a file system without O_DIRECT: dropped from the cache once synced
            if not direct:
                raise
            direct = False
            fd = self._open(self.path(segment), flags & ~os.O_EXCL)
        if self.fsync == "always":
            fsync_dir(self.folder)
        return _Active(segment, fd, direct=direct)

    @staticmethod
    def _open(path: str, flags: int) -> int:
        return os.open(path, flags, 0o644)

    def close(self) -> None:
        with self._append_lock:
            for active in self._active.values():
                active.sealed = True
                if active.writers == 0:
                    self._seal(active)
            self._active.clear()
        with self._db_lock:
            self._db.close()

    # ---- look-ups ----
    def locate(self, sha: str) -> Location | None:
        with self._db_lock:
            row = self._db.execute(FIND, (sha,)).fetchone()
        return None if row is None else Location(self.path(row[0]), row[1], row[2])

    def touched(self, sha: str) -> float | None:
        with self._db_lock:
            row = self._db.execute("SELECT touched FROM records WHERE sha = ?", (sha,)).fetchone()
        return None if row is None else row[0]

    def touch(self, sha: str, when: float | None = None) -> bool:
        """Mark a stored chunk as in use at ``when`` (now); False when it is not here."""
        with self._db_lock:
            cur = self._db.execute(
                "UPDATE records SET touched = ? WHERE sha = ?", (time.time() if when is None else when, sha)
            )
        return cur.rowcount > 0

    def names_after(self, after: str, limit: int) -> list[str]:
        with self._db_lock:
            rows = self._db.execute(NAMES_AFTER, (after, limit)).fetchall()
        return [r[0] for r in rows]

    def iter_shas(self) -> Iterator[str]:
        after = ""
        while page := self.names_after(after, 1000):
            yield from page
            after = page[-1]

    def locations(self) -> dict[str, Location]:
        """Every indexed chunk's location (start-up checks, tests, the chaos nemesis)."""
        with self._db_lock:
            rows = self._db.execute("SELECT sha, segment, offset, length FROM records").fetchall()
        return {sha: Location(self.path(seg), off, length) for sha, seg, off, length in rows}

    def live_bytes(self) -> tuple[int, int]:
        """(bytes of live records, bytes of every segment file): what compaction could free."""
        with self._db_lock:
            live = self._db.execute("SELECT coalesce(sum(live), 0) FROM segments").fetchone()[0]
            ids = [r[0] for r in self._db.execute("SELECT id FROM segments")]
        total = 0
        for segment in ids:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(self.path(segment)).st_size
        return live, total

    # ---- reads ----
    def read(self, sha: str, piece: int) -> list[bytes] | None:
        """A chunk's bytes (not verified here) in pieces of at most ``piece``; None when absent.
        A segment unlinked by compaction between the look-up and the open is looked up again."""
        for _ in range(3):
            loc = self.locate(sha)
            if loc is None:
                return None
            try:
                fd = os.open(loc.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # moved by compaction meanwhile
            try:
                # No readahead: past a record's end lie other chunks, rarely read next, whose
                # pages would only crowd the cache (and cost a fresh page each to fill).
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                return _pread_pieces(fd, loc.offset, loc.length, piece)
            finally:
                os.close(fd)
        return None

    # ---- writes ----
    def append(self, sha: str, pieces: Sequence[Buffer], fast: bytes, cached: bool) -> None:
        """Store chunk ``sha`` (whose bytes the caller checked) durably; its read sum ``fast``
        goes in the record's head. The caller checked it is not indexed yet (``touch``); one
        written twice at once keeps the first row, the other record is dead bytes."""
        active, start, length = self._write_record(sha, pieces, fast, cached)
        try:
            with self._transaction():
                self._insert(sha, active.id, start, length, time.time())
        finally:
            self._done_writing(active)

    def _write_record(
        self, sha: str, pieces: Sequence[Buffer], fast: bytes, cached: bool
    ) -> tuple[_Active, int, int]:
        """Append one record and make it durable; (its segment, its bytes' offset, length).
        The caller must call ``_done_writing`` once its index row is written."""
        length = sum(len(p) for p in pieces)
        head = HEAD.pack(MAGIC, bytes.fromhex(sha), length, fast)
        with self._append_lock:
            active = self._active.get(cached) or self._active.setdefault(cached, self._start_segment(cached))
            offset = active.end
            try:
                if active.direct:
                    self._write_direct(active.fd, head, pieces, offset, span(length))
                else:
                    pad = bytes(span(length) - HEAD.size - length)
                    write_buffers(active.fd, [head, *pieces, pad], offset)
            except BaseException:
                os.ftruncate(active.fd, offset)  # no partial record before the next one
                raise
            active.end = offset + span(length)
            active.writers += 1
            if active.end >= self.roll_bytes:
                active.sealed = True
                del self._active[cached]  # the next append starts a new one
        try:
            if self.fsync != "never":
                self._make_durable(active, offset + span(length))
                if not cached and not active.direct:  # whole folios: no neighbour here is cached
                    start = offset - offset % FOLIO
                    os.posix_fadvise(active.fd, start, offset + span(length) + FOLIO - start, DONTNEED)
        except BaseException:
            self._done_writing(active)
            raise
        return active, offset + HEAD.size, length

    def _write_direct(self, fd: int, head: bytes, pieces: Sequence[Buffer], offset: int, size: int) -> None:
        """Write one record with O_DIRECT (under the append lock): copied into an aligned
        buffer that is reused, so its memory is warm, where a page-cache write takes fresh
        pages to fill (on a VM whose host backs memory lazily, a trip to the hypervisor each)
        and dropping them afterwards costs a call more."""
        if len(self._buffer) < size:
            self._buffer = mmap.mmap(-1, size)
        view = memoryview(self._buffer)
        try:
            view[: HEAD.size] = head
            at = HEAD.size
            for piece in pieces:
                view[at : at + len(piece)] = piece
                at += len(piece)
            view[at:size] = bytes(size - at)
            done = 0
            while done < size:
                done += os.pwrite(fd, view[done:size], offset + done)
        finally:
            view.release()
            if len(self._buffer) > KEEP_BUFFER:
                self._buffer = mmap.mmap(-1, ALIGN)

    def _make_durable(self, active: _Active, end: int) -> None:
        """Return once the first ``end`` bytes of ``active`` are on disk. Group commit: one
        ``fdatasync`` covers every record written before it started, so a writer that finds
        one running waits for it, and starts another only if its record came too late."""
        while True:
            with self._sync:
                while active.syncing and active.synced < end:
                    self._sync.wait()
                if active.synced >= end:
                    return
                active.syncing = True
                target = active.end  # every record up to here is written (offset order)
            done = False
            try:
                os.fdatasync(active.fd)
                done = True
            finally:
                with self._sync:
                    active.syncing = False
                    if done:
                        active.synced = max(active.synced, target)
                    self._sync.notify_all()

    def _done_writing(self, active: _Active) -> None:
        with self._append_lock:
            active.writers -= 1
            if active.sealed and active.writers == 0:
                self._seal(active)

    def _seal(self, active: _Active) -> None:
        """Every record of a full segment is indexed: start-up need not scan it again."""
        with self._db_lock:
            self._db.execute("UPDATE segments SET indexed = 1 WHERE id = ?", (active.id,))
        os.close(active.fd)

    def _insert(self, sha: str, segment: int, offset: int, length: int, touched: float) -> None:
        """Index a record (in a ``_transaction``); a chunk indexed meanwhile keeps its row."""
        if self._db.execute(INSERT, (sha, segment, offset, length, touched)).rowcount > 0:
            self._db.execute(ADD_LIVE, (span(length), segment))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The index connection, under its lock, in one transaction (rolled back on error)."""
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")  # waits for a checkpoint rather than failing
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def delete(self, sha: str) -> bool:
        """Forget a chunk (its bytes stay until compaction); False when it was not here."""
        with self._transaction() as db:
            row = db.execute("SELECT segment, length FROM records WHERE sha = ?", (sha,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM records WHERE sha = ?", (sha,))
                db.execute(ADD_LIVE, (-span(row[1]), row[0]))
        return row is not None

    # ---- compaction ----
    def compact(self, quarantine: Path) -> int:
        """Reclaim one segment whose live share fell under COMPACT_BELOW: copy its live records
        (checked against their read sums; a bad one goes to ``quarantine`` and is forgotten,
        for repair to fetch again) to the active segment, then unlink it. An active segment
        that qualifies is sealed first (the next append starts a new one), so the space of
        deleted records comes back without waiting for the segment to fill. Returns the bytes
        freed (0: nothing worth compacting). Empty segments on the way go at once."""
        tried: set[int] = set()
        while (picked := self._pick_segment(tried)) is not None:
            tried.add(picked[0])
            if self._retire(picked[0]):
                freed = self._compact(*picked, quarantine)
                if freed:
                    return freed
        return 0

    def _retire(self, segment: int) -> bool:
        """Seal ``segment`` if it is an active one; True once it is sealed (not while an
        append to it is still being indexed)."""
        with self._append_lock:
            for cached, active in list(self._active.items()):
                if active.id == segment:
                    del self._active[cached]
                    active.sealed = True
                    if active.writers:
                        return False
                    self._seal(active)
        with self._db_lock:
            row = self._db.execute("SELECT indexed FROM segments WHERE id = ?", (segment,)).fetchone()
        return row is not None and row[0] == 1

    def _compact(self, segment: int, size: int, quarantine: Path) -> int:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT sha, offset, length FROM records WHERE segment = ? ORDER BY offset", (segment,)
            ).fetchall()
        moved = 0
        with open(self.path(segment), "rb", buffering=0) as fh:
            for sha, offset, length in rows:
                raw = os.pread(fh.fileno(), HEAD.size + length, offset - HEAD.size)
                whole = len(raw) == HEAD.size + length  # else the file lost its end
                magic, name, _, fast = HEAD.unpack_from(raw) if whole else (b"", b"", 0, b"")
                data = memoryview(raw)[HEAD.size :]
                if magic != MAGIC or name.hex() != sha or xxhash.xxh3_128_digest(data) != fast:
                    (quarantine / f"{sha}.{int(time.time())}").write_bytes(data)
                    self._forget_at(sha, segment, offset)
                    log.warning("quarantined corrupt chunk %s (segment %d)", sha[:12], segment)
                    continue
                active, start, _ = self._write_record(sha, [data], fast, cached=False)
                try:
                    with self._transaction() as db:
                        if db.execute(MOVE, (active.id, start, sha, segment, offset)).rowcount > 0:
                            db.execute(ADD_LIVE, (span(length), active.id))  # not deleted meanwhile
                            db.execute(ADD_LIVE, (-span(length), segment))
                finally:
                    self._done_writing(active)
                moved += span(length)
        with self._db_lock:
            left = self._db.execute("SELECT 1 FROM records WHERE segment = ? LIMIT 1", (segment,)).fetchone()
            if left is not None:
                return 0  # a record was indexed here meanwhile (a crash's scan): next time
            self._db.execute("DELETE FROM segments WHERE id = ?", (segment,))
        # The moves must outlive a power cut before their old copies go: the index is not
        # fsynced per write, and a checkpoint syncs its WAL (on a connection of its own, so
        # that look-ups do not wait for it).
        with contextlib.closing(sqlite3.connect(self.folder / INDEX_NAME)) as sync:
            sync.execute("PRAGMA wal_checkpoint(FULL)")
        os.unlink(self.path(segment))
        if self.fsync == "always":
            fsync_dir(self.folder)
        log.info("compacted segment %d: %d bytes kept of %d", segment, moved, size)
        return size - moved

    def _pick_segment(self, skip: set[int]) -> tuple[int, int] | None:
        """The sealed or active segment with the smallest live share under COMPACT_BELOW, and
        its size (an empty active segment is left alone)."""
        with self._append_lock:
            active = {a.id for a in self._active.values()}
        with self._db_lock:
            rows = self._db.execute(SEGMENTS).fetchall()
        best: tuple[float, int, int] | None = None
        for segment, live, indexed in rows:
            if segment in skip or not (indexed or segment in active):
                continue
            try:
                size = os.stat(self.path(segment)).st_size
            except FileNotFoundError:
                continue
            if not size and segment in active:
                continue
            share = live / size if size else 0.0
            if share < COMPACT_BELOW and (best is None or share < best[0]):
                best = (share, segment, size)
        return None if best is None else (best[1], best[2])

    def _forget_at(self, sha: str, segment: int, offset: int) -> None:
        with self._transaction() as db:
            row = db.execute(FIND_AT, (sha, segment, offset)).fetchone()
            if row is not None:
                db.execute("DELETE FROM records WHERE sha = ?", (sha,))
                db.execute(ADD_LIVE, (-span(row[0]), segment))


def _pread_pieces(fd: int, offset: int, length: int, piece: int) -> list[bytes]:
    pieces: list[bytes] = []
    end = offset + length
    while offset < end:
        block = os.pread(fd, min(piece, end - offset), offset)
        if not block:
            break  # the file lost its end: the caller's check finds the chunk corrupt
        pieces.append(block)
        offset += len(block)
    return pieces


def fsync_dir(path: Path) -> None:
    """Make a file's creation, a rename or an unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
