"""One node's local store: streaming chunked writes, verified reads, LWW metadata commits.

Blocking disk work runs in threads so the event loop never waits on fsync; metadata writes go
through one dedicated thread (SQLite has one writer anyway), so commits are serialised in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..core.manifest import ManifestEntry
from ..core.merkle import MerkleTree
from ..errors import BadRequest, CorruptData, InsufficientStorage, PayloadTooLarge, Unavailable, disk_full
from .checkpoint import DB_NAME, create_checkpoint, list_checkpoints, restore_checkpoint
from .chunks import Body, ChunkStore, fsync_dir, is_sha256_hex, read_sum
from .lock import DataDirLock
from .metadata import DatabaseCorrupt, MetadataDB, check_integrity
from .reserve import SpaceReserve
from .staging import ChunkStager

log = logging.getLogger(__name__)
T = TypeVar("T")


SPACE_CACHE_SECONDS = 1.0  # how long a free-space reading is trusted ...
SPACE_MARGIN = 1 << 30  # ... while this much more than the limit is free
SMALL_CHUNK = 64 * 1024  # chunks up to this size live in SQLite: one fsync with their entry
LOW_SPACE = 256 * 1024 * 1024  # free bytes above the limit below which space is reclaimed at once
FEED_BYTES = 1024 * 1024  # an upload's pieces go to disk in batches of about this much
REMEMBERED_SUMS = 10_000  # read sums waiting for the next commit to be recorded (at most)
ORPHAN_PAGE = 5000  # chunk names per page of a whole orphan walk (collect_garbage(full=True))


@dataclass
class StoredBlob:
    """A completed upload, not yet visible: chunk files staged under tmp, or the bytes of a
    small file kept in memory (``inline``) to be stored with its manifest entry."""

    size: int
    sha256: str | None  # None: staged for a gateway that hashes the whole file itself
    chunks: tuple[str, ...]
    staging: Path
    inline: bytes | None = None
    sums: dict[str, bytes] = field(default_factory=dict)  # chunk sha -> read sum, recorded on commit


class SharedExclusiveLock:
    """Many commits at once (shared) or one garbage collection (exclusive), never both."""

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # exclusive waiters block new shared holders, so GC is not starved
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def shared(self):
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self):
        async with self._cond:
            self._waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class GroupCommitter:
    """Batches concurrent metadata commits into one SQLite transaction (one fsync).

    Each caller's future resolves only after the transaction holding its entries committed,
    so nobody is acknowledged before their own data is durable. Chunks' read sums ride along
    in the same transactions (``remember`` ones wait for the next commit: they are a shortcut
    for reads, never needed for correctness).
    """

    def __init__(self, db: MetadataDB, run: Callable[..., Any]) -> None:
        self.db = db
        self.run = run
        self.pending: list[tuple[list[ManifestEntry], dict[str, bytes], asyncio.Future]] = []
        self.sums: dict[str, bytes] = {}
        self.flushing = False
        self.batches = 0
        self._task: asyncio.Future | None = None

    def remember(self, sums: dict[str, bytes]) -> None:
        """Record these read sums with the next commit (dropped when too many wait)."""
        if len(self.sums) < REMEMBERED_SUMS:
            self.sums.update(sums)

    async def submit(
        self, entries: list[ManifestEntry], small: dict[str, bytes], sums: dict[str, bytes] | None = None
    ) -> list:
        if sums:
            self.sums.update(sums)
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((entries, small, fut))
        if not self.flushing:
            self.flushing = True
            self._task = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                sums, self.sums = self.sums, {}
                self.batches += 1
                try:
                    results = await self.run(self.db.apply_batch, [(e, s) for e, s, _ in batch], sums)
                except BaseException as exc:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self.flushing = False


@dataclass
class StoreStats:
    corrupt_chunks_found: int = 0
    restored_from: str | None = None
    last_checkpoint: dict[str, Any] | None = None


class LocalStore:
    """Chunks plus metadata for one data directory."""

    def __init__(
        self, data_dir: Path, chunk_size: int, fsync: str = "always", min_free_bytes: int = 0
    ) -> None:
        self.data_dir = data_dir
        self.chunk_size = chunk_size
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        self._free_seen = (0, -SPACE_CACHE_SECONDS)  # (free bytes, monotonic time asked)
        self.stats = StoreStats()
        self.on_corrupt: Callable[[str], None] = lambda sha: None
        self.gc_lock = SharedExclusiveLock()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirLock(data_dir).acquire()  # before anything on disk is touched
        self.chunks = ChunkStore(data_dir, fsync)
        self.stats.restored_from = self._ensure_database()
        self.db = MetadataDB(data_dir / DB_NAME, fsync)
        self.chunks.clean_tmp()
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="p2pstore-io")
        self._dbw = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2pstore-db")
        self.committer = GroupCommitter(self.db, self.in_db)
        self.reserve = SpaceReserve(data_dir)
        self.reserve.ensure(min_free_bytes)

    # ---- start-up ----
    def _ensure_database(self) -> str | None:
        """Check the database; restore the newest checkpoint when it is missing or corrupt."""
        path = self.data_dir / DB_NAME
        if path.exists():
            try:
                check_integrity(path)
                return None
            except DatabaseCorrupt as exc:
                log.error("metadata database is corrupt (%s)", exc)
                aside = path.with_name(f"{DB_NAME}.corrupt-{int(time.time())}")
                os.replace(path, aside)
                for suffix in ("-wal", "-shm"):
                    (self.data_dir / (DB_NAME + suffix)).unlink(missing_ok=True)
        elif not list_checkpoints(self.data_dir):
            return None
        else:
            log.error("metadata database is missing")
        if not list_checkpoints(self.data_dir):
            log.error("no checkpoint to restore from; starting with an empty database")
            return None
        name = restore_checkpoint(self.data_dir)
        log.warning("restored metadata from checkpoint %s", name)
        return name

    def missing_chunks(self) -> set[str]:
        return {sha for sha in self.db.referenced_chunks() if not self.has_chunk(sha)}

    # ---- chunks, wherever they live (files, or SQLite for small ones) ----
    def has_chunk(self, sha: str, small: bool = False) -> bool:
        """Present as a file or in SQLite; ``small`` says where to look first."""
        if small:
            return self.db.has_small_chunk(sha) or self.chunks.has(sha)
        return self.chunks.has(sha) or self.db.has_small_chunk(sha)

    def chunk_presence(self) -> Callable[[str], bool]:
        """``has_chunk`` for scans over many entries: the small chunks' names read in one query
        (a snapshot) instead of one query per chunk; chunk files are looked up as they come."""
        small = set(self.db.small_chunk_shas())
        return lambda sha: sha in small or self.chunks.has(sha)

    def chunk_length(self, sha: str) -> int | None:
        length = self.chunks.length(sha)
        return length if length is not None else self.db.small_chunk_length(sha)

    def iter_chunk_shas(self) -> Iterator[str]:
        """Every chunk's name, files then the database's, read lazily (consume it in pages)."""
        yield from self.chunks.iter_shas()
        yield from self.db.iter_small_chunk_shas()

    @staticmethod
    def _verified_small(sha: str, data: bytes) -> bytes:
        if hashlib.sha256(data).hexdigest() != sha:
            raise CorruptData(f"chunk {sha[:12]} is corrupt", {"chunk": sha})
        return data

    async def verify_chunks(self, shas: Sequence[str], max_bytes: int) -> list[tuple[str, int | None, bool]]:
        """Check chunks from the front of ``shas`` against their sha256 in one trip to the I/O
        thread (the scrubber: a trip and a length query on the loop per small chunk cost ~4 % of
        a busy loop). It stops once about ``max_bytes`` were read, before a chunk file that would
        go past that (which gets a trip of its own). Returns (sha, length or None when gone,
        good) for each chunk looked at, in order; a good chunk file whose recorded read sum is
        missing or wrong gets the right one with the next commit."""
        checked = await self.in_io(self._check_chunks, shas, max_bytes)
        mended = {sha: fast for sha, _, _, fast in checked if fast is not None}
        if mended:
            self.committer.remember(mended)  # here on the loop, like every commit
        return [(sha, length, ok) for sha, length, ok, _ in checked]

    def _check_chunks(
        self, shas: Sequence[str], max_bytes: int
    ) -> list[tuple[str, int | None, bool, bytes | None]]:
        """``verify_chunks``' work; blocking."""
        checked: list[tuple[str, int | None, bool, bytes | None]] = []
        read = 0
        for sha in shas:
            length = self.chunks.length(sha)
            if checked and read + (length or 0) > max_bytes:
                break  # enough for one trip (a small chunk's length is only known once read)
            if length is None:  # not a file: a small chunk in SQLite (each copy of it), or gone
                copies = self.db.small_chunk_copies(sha)
                length = sum(map(len, copies)) if copies else None
                ok, mended = bool(copies) and all(hashlib.sha256(c).hexdigest() == sha for c in copies), None
            else:
                ok, mended = self._check_chunk(sha)
            checked.append((sha, length, ok, mended))
            read += length or 0
        return checked

    def _check_chunk(self, sha: str) -> tuple[bool, bytes | None]:
        """A chunk file's (good, the read sum to record if it differs from the recorded one)."""
        fast = self.chunks.verify(sha)
        if fast is None:
            return False, None
        return True, (fast if self.db.chunk_source(sha)[1] != fast else None)

    async def write_chunk(self, data: bytes, sha: str) -> None:
        """Store one verified chunk (repair): small ones in SQLite, others as files. Like a
        client write, it stops at ``min_free_bytes``: a disk filled to the last byte by repair
        would fail the metadata commits that everything else needs."""
        self.check_space(len(data))
        if len(data) <= SMALL_CHUNK:
            await self.in_db(self.db.put_small_chunk, sha, data)
        else:  # a repaired copy: not kept in the page cache
            self.committer.remember({sha: await self.in_io(self.write_verified_file, data, sha, False)})

    def write_verified_file(self, data: Body, sha: str, cached: bool = True) -> bytes:
        """Write a chunk file whose bytes (one buffer or its pieces) the caller checked against
        ``sha``; their read sum."""
        fast = read_sum(data)
        self.chunks.write(data, sha, cached, fast)
        return fast

    async def quarantine_chunk(self, sha: str) -> None:
        if self.chunks.quarantine(sha) is None:
            copies = self.db.small_chunk_copies(sha)  # all go; a bad one is kept for a look
            if copies:
                data = next((c for c in copies if hashlib.sha256(c).hexdigest() != sha), copies[0])
                (self.chunks.quarantine_dir / f"{sha}.{int(time.time())}").write_bytes(data)
                await self.in_db(self.db.drop_small_chunks, [sha])
                log.warning("quarantined corrupt chunk %s", sha[:12])

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self._dbw.shutdown(wait=True)
        self.chunks.close()
        self.db.close()
        self.lock.release()

    # ---- thread helpers ----
    async def in_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._dbw, fn, *args)

    # ---- writes ----
    def low_on_space(self) -> bool:
        """Close to refusing writes: deleted files' chunks are then freed without the usual wait."""
        return shutil.disk_usage(self.data_dir).free < self.min_free_bytes + LOW_SPACE

    def check_space(self, incoming: int = 0) -> None:
        """Refuse a write that would leave less than ``min_free_bytes``. The free space is asked
        of the file system at most once a second while more than SPACE_MARGIN is left above the
        limit (statfs under heavy writes cost ~1 % of a node's CPU when asked per write)."""
        free, seen_at = self._free_seen
        now = time.monotonic()
        if now - seen_at > SPACE_CACHE_SECONDS or free - incoming - self.min_free_bytes < SPACE_MARGIN:
            free = shutil.disk_usage(self.data_dir).free
            self._free_seen = (free, now)
        if free - incoming < self.min_free_bytes:
            raise InsufficientStorage(
                "not enough free disk space on this node", {"free": free, "needed": incoming}
            )

    async def write_stream(
        self,
        body: AsyncIterator[bytes],
        expected_sha: str | None = None,
        max_size: int = 0,
        expected_size: int | None = None,
        whole_hash: bool = True,
        cached: bool = True,
    ) -> StoredBlob:
        """Stage a streamed body as chunk files; raise (and clean up) on any problem.

        Pieces are written to disk (hashed, chunk by chunk: see staging.py) in an I/O thread
        while the next pieces arrive from the network, about 1 MiB at a time: memory stays at
        about 2 MiB per upload whatever the chunk and file size. A body that stays within
        ``SMALL_CHUNK`` (and below one chunk) is kept in memory and stored with its entry.
        ``whole_hash=False`` skips the whole-file sha256 (and the ``expected_sha`` check): the
        gateway feeding this replica computes and checks it once for all replicas.
        ``cached=False``: each chunk file leaves the page cache once fsynced (a replica's copy).
        """
        self.check_space(expected_size or 0)
        staging = self.chunks.tmp_dir / f"up-{uuid.uuid4().hex}"
        whole = hashlib.sha256() if whole_hash else None
        inline_limit = min(SMALL_CHUNK, self.chunk_size - 1)
        stager: ChunkStager | None = None
        held: list[bytes] = []  # pieces not handed to the stager yet
        held_bytes = size = 0
        pending: asyncio.Future | None = None
        try:
            async for piece in body:
                size += len(piece)
                if max_size and size > max_size:
                    raise PayloadTooLarge(f"upload larger than the limit of {max_size} bytes")
                held.append(piece)
                held_bytes += len(piece)
                if stager is None:
                    if size <= inline_limit:
                        continue
                    stager = ChunkStager(
                        staging, self.chunk_size, self.fsync != "never", self.chunks, whole, cached
                    )
                if held_bytes >= FEED_BYTES:
                    if pending is not None:
                        await pending  # one batch on its way to disk at a time, in order
                    pending = asyncio.ensure_future(self.in_io(stager.feed, held))
                    held, held_bytes = [], 0
            if pending is not None:
                await pending
                pending = None
            if stager is None:  # a small file: no chunk file, stored with its entry
                data = b"".join(held)
                if whole is not None:
                    whole.update(data)
                inline = data or None
                chunks = (hashlib.sha256(data).hexdigest(),) if data else ()
            else:
                if held:
                    await self.in_io(stager.feed, held)
                inline = None
                chunks = tuple(await self.in_io(stager.close))
            digest = whole.hexdigest() if whole is not None else None
            if expected_size is not None and size != expected_size:
                raise BadRequest("body shorter than Content-Length", {"expected": expected_size, "got": size})
            if expected_sha and digest is not None and expected_sha != digest:
                raise BadRequest(
                    "X-Content-SHA256 does not match the body; nothing stored",
                    {"expected": expected_sha, "actual": digest},
                )
            sums = stager.sums if stager is not None else {}
            return StoredBlob(size, digest, chunks, staging, inline, sums)
        except BaseException as exc:
            if pending is not None:  # let the batch in the thread end before cleaning up after it
                with contextlib.suppress(BaseException):
                    await pending
            if stager is not None:
                await self.in_io(stager.abort)
            await self.in_io(shutil.rmtree, staging, True)
            full = disk_full(exc)
            if full is not None:
                raise full from exc
            raise

    def _promote(self, blob: StoredBlob) -> None:
        """Move staged chunk files into the chunk store (rename + dir fsync)."""
        if not blob.staging.exists():
            return
        touched: set[Path] = set()
        for staged in blob.staging.iterdir():
            if not is_sha256_hex(staged.name):
                continue  # only finished chunks (named by their sha256) ever leave staging
            final = self.chunks.path(staged.name)
            if self.chunks.has(staged.name):
                continue
            final.parent.mkdir(exist_ok=True)
            os.replace(staged, final)
            touched.add(final.parent)
        if self.fsync == "always":
            for folder in touched:
                fsync_dir(folder)
        shutil.rmtree(blob.staging, ignore_errors=True)

    async def discard(self, blob: StoredBlob) -> None:
        if blob.staging.exists():
            await self.in_io(shutil.rmtree, blob.staging, True)

    async def commit(self, blob: StoredBlob | None, entry: ManifestEntry) -> bool:
        """Make ``blob`` durable under ``entry``; True if the entry won (is now current).

        Commits share the GC lock (GC takes it alone), and check every chunk is present before
        the entry is applied, so garbage collection can never remove a chunk a new entry is
        about to reference. Concurrent commits share one SQLite transaction (group commit).
        """
        async with self.gc_lock.shared():
            small: dict[str, bytes] = {}
            if blob is not None:
                if blob.inline is not None:
                    small[blob.chunks[0]] = blob.inline
                else:
                    await self.in_io(self._promote, blob)
                    missing = [c for c in entry.chunks if not self.has_chunk(c)]
                    if missing:
                        raise Unavailable(f"{len(missing)} chunks vanished before commit; retry")
            try:
                won = await self.apply_entries([entry], small, blob.sums if blob is not None else None)
            except Exception as exc:
                # A delete on a disk full to the last byte: free the reserve and write it again.
                if not (entry.deleted and disk_full(exc) and self.reserve.release()):
                    raise
                won = await self.apply_entries([entry])
        return any(new.key == entry.key for _, new in won)  # not only a kept version of it

    async def collect_garbage(self, min_age: float, full: bool = False) -> int:
        """Delete chunks no entry references that nobody touched for ``min_age`` seconds.

        Usually only chunks whose reference count fell to zero are looked at, which costs the
        same with 100 or 100,000 files; ``full`` also walks every chunk file and small chunk
        for orphans a crash left behind, page by page (``orphan_page``; the node's housekeeping
        walks them paced instead, a page per round). Candidates are found without blocking
        writes: the exclusive lock is held only to re-check and delete them.
        """
        candidates = set(await self.in_io(self.db.unreferenced_chunks))
        after: str | None = ""
        while full and after is not None:
            orphans, _, after = await self.in_io(self.orphan_page, after, ORPHAN_PAGE)
            candidates.update(orphans)
        return await self.delete_unreferenced(sorted(candidates), min_age)

    async def collect_orphans(self, min_age: float, after: str, limit: int) -> tuple[int, int, str | None]:
        """One page of the orphan walk: delete the unreferenced chunks among the next ``limit``
        names after ``after``; return (deleted, names checked, the next cursor or None at the
        end)."""
        orphans, checked, nxt = await self.in_io(self.orphan_page, after, limit)
        return await self.delete_unreferenced(orphans, min_age), checked, nxt

    def orphan_page(self, after: str, limit: int) -> tuple[list[str], int, str | None]:
        """The chunks stored by name (chunk files, rows of ``small_chunks``) among the next
        ``limit`` names after ``after`` that no entry references, how many names were
        checked, and where the next page starts (None: the walk is done). Only a page of names
        is ever in memory; each is checked by a seek in ``chunk_refs``."""
        files = self.chunks.names_after(after, limit)
        small = self.db.loose_small_chunks_after(after, limit)
        # Each source's page holds its first ``limit`` names, so the first ``limit`` of both
        # together are exactly the next ``limit`` names: none is skipped, none seen twice.
        names = sorted({*files, *small})[:limit]
        end = names[-1] if len(names) >= limit else None
        referenced = self.db.referenced_among(names)
        return [n for n in names if n not in referenced], len(names), end

    async def delete_unreferenced(self, candidates: list[str], min_age: float) -> int:
        """Delete those of ``candidates`` still unreferenced and untouched for ``min_age``
        seconds, re-checked under the exclusive GC lock (a commit referencing one meanwhile
        keeps it); returns how many went."""
        if not candidates:
            return 0
        async with self.gc_lock.exclusive():
            files, small = await self.in_io(self._delete_unreferenced, candidates, time.time() - min_age)
            if small:
                await self.in_db(self.db.delete_small_chunks, small)
        if files:
            log.info("garbage collection removed %d unreferenced chunk files", files)
        return files + len(small)

    def _delete_unreferenced(self, candidates: list[str], cutoff: float) -> tuple[int, list[str]]:
        """Under the exclusive GC lock: delete old unreferenced chunk files, name the small
        chunks to drop, and forget the zero-reference rows whose data is gone."""
        removed, small, gone = 0, [], []
        for sha in candidates:
            if self.db.chunk_refs(sha) > 0:
                continue  # referenced again since the candidates were listed
            if self.db.has_loose_small_chunk(sha):
                small.append(sha)
            touched = self.chunks.touched(sha)
            if touched is not None:
                if touched >= cutoff:
                    continue  # young: maybe staged for a commit that has not landed yet
                self.chunks.delete(sha)
                removed += 1
            gone.append(sha)
        self.db.forget_chunks(gone)
        return removed, small

    async def drop_chunks(self, shas: Iterable[str]) -> int:
        """Delete chunk files this node no longer owns (handoff done); returns how many."""
        shas = list(shas)
        async with self.gc_lock.exclusive():
            await self.in_io(lambda: [self.chunks.delete(s) for s in shas])
            await self.in_db(self.db.drop_small_chunks, shas)
            await self.in_db(self.db.delete_chunk_sums, shas)
        return len(shas)

    async def drop_chunks_where(self, decide: Callable[[], Iterable[str]]) -> list[str]:
        """``drop_chunks`` of the chunks ``decide`` picks (in the I/O thread) under the same
        exclusive GC lock: no commit adds a reference between the choice and the deletion."""
        async with self.gc_lock.exclusive():
            shas = list(await self.in_io(decide))
            if shas:
                await self.in_io(lambda: [self.chunks.delete(s) for s in shas])
                await self.in_db(self.db.drop_small_chunks, shas)
                await self.in_db(self.db.delete_chunk_sums, shas)
        return shas

    async def apply_entries(
        self,
        entries: Iterable[ManifestEntry],
        small: dict[str, bytes] | None = None,
        sums: dict[str, bytes] | None = None,
    ) -> list:
        """Apply manifest entries (LWW; the database keeps the Merkle tree in step); return the
        winners as (old, new) pairs. ``sums``: read sums of chunk files written for these entries
        (recorded with them)."""
        return await self.committer.submit(list(entries), small or {}, sums)

    async def purge_tombstones(self, tombstones: list[ManifestEntry]) -> int:
        return len(await self.in_db(self.db.purge_tombstones, tombstones))

    # ---- the MerkleStore protocol (core/merkle.py): what the node's anti-entropy uses ----
    def merkle(self) -> MerkleTree:
        """Kept by the metadata database itself, in step with every committed entry."""
        return self.db.tree

    def hashes_in_leaf(self, leaf: int) -> list[tuple[str, bytes]]:
        return self.db.hashes_in_leaf(leaf)

    def small_data(self, sha: str) -> bytes | None:
        """A small file's body if the database holds it (sent along with its entry)."""
        return self.db.small_chunk(sha)

    # ---- reads ----
    def get(self, key: str) -> ManifestEntry | None:
        return self.db.get(key)

    async def read_chunk(self, sha: str) -> bytes:
        """A verified chunk; raises CorruptData (counted) or FileNotFoundError."""
        small, known_sum = self.db.chunk_source(sha)
        if small is not None:  # a small row (<= 64 KiB): cheaper here than a thread hop
            return self.check_small_chunk(sha, small)
        try:
            data, new_sum = await self.in_io(self.chunks.read, sha, known_sum)
        except CorruptData:
            self._found_corrupt(sha)
            raise
        if new_sum is not None:  # verified by sha256: the next reads need only the sum
            self.committer.remember({sha: new_sum})
        return data

    async def read_chunk_pieces(self, sha: str) -> list[bytes]:
        """A verified chunk as pieces of at most 1 MiB (``ChunkStore.read_pieces``); raises as
        ``read_chunk``."""
        small, known_sum = self.db.chunk_source(sha)
        if small is not None:
            return [self.check_small_chunk(sha, small)]
        try:
            pieces, new_sum = await self.in_io(self.chunks.read_pieces, sha, known_sum)
        except CorruptData:
            self._found_corrupt(sha)
            raise
        if new_sum is not None:
            self.committer.remember({sha: new_sum})
        return pieces

    def check_small_chunk(self, sha: str, data: bytes) -> bytes:
        """A small chunk's bytes (read from SQLite) if they hash to ``sha``; raises CorruptData
        (counted) otherwise."""
        try:
            return self._verified_small(sha, data)
        except CorruptData:
            self._found_corrupt(sha)
            raise

    def _found_corrupt(self, sha: str) -> None:
        self.stats.corrupt_chunks_found += 1
        log.error("corrupt chunk %s detected while reading", sha[:12])
        self.on_corrupt(sha)

    def get_for_read(self, key: str) -> tuple[ManifestEntry | None, bool, bytes | None]:
        """``get_with_presence``, plus a small file's bytes when they are stored here (one query
        for the entry and the data of a GET)."""
        entry, small = self.db.get_with_small_data(key)
        if entry is None:
            return None, False, None
        only = small if entry.chunks == (entry.sha256,) else None  # the file's only chunk
        return entry, self._complete(entry, only is not None), only

    def get_with_presence(self, key: str) -> tuple[ManifestEntry | None, bool]:
        """``key``'s entry and whether this node holds all of its content (a tombstone: yes)."""
        entry, small_here = self.db.get_with_small(key)
        return entry, entry is not None and self._complete(entry, small_here)

    def _complete(self, entry: ManifestEntry, small_here: bool) -> bool:
        """All of the entry's content is here: a tombstone, a small file whose only chunk is in
        the database (``small_here``), or every chunk present."""
        if entry.deleted or (small_here and entry.chunks == (entry.sha256,)):
            return True
        return self.has_all_chunks(entry)

    def has_all_chunks(self, entry: ManifestEntry) -> bool:
        small = entry.size <= SMALL_CHUNK
        return all(self.has_chunk(c, small) for c in entry.chunks)

    # ---- checkpoints ----
    async def checkpoint(self, keep: int) -> dict[str, Any]:
        result = await self.in_db(create_checkpoint, self.db, self.data_dir, keep)
        self.stats.last_checkpoint = result
        return result
