"""Chunk garbage collection on a real store in a temp dir: a chunk whose last reference went is
collected by the cheap round, an orphan (a chunk file, or a segment record: chunks written
whole) only by the walk over every chunk name (paced, a
page at a time), young or referenced chunks never, not even when a write references one while
the walk looks at it."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from p2pstore.cluster.housekeeping import Housekeeper
from p2pstore.config import NodeConfig
from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.storage.store import LocalStore

MiB = 1024 * 1024


async def one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def stored(store: LocalStore, key: str, data: bytes, version: str) -> ManifestEntry:
    blob = await store.write_stream(one_piece(data))
    entry = ManifestEntry(
        key=key, version=version, size=blob.size, sha256=blob.sha256, chunks=tuple(blob.chunks),
        content_type="application/octet-stream", deleted=False, modified=time.time(),
    )  # fmt: skip
    assert await store.commit(blob, entry)
    return entry


async def test_gc_rounds(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, chunk_size=MiB, fsync="never")
    try:
        gone = await stored(store, "gone", os.urandom(200_000), make_version(1000, 0, "n1"))
        kept = await stored(store, "kept", os.urandom(200_000), make_version(1000, 0, "n1"))
        small = await stored(store, "small", b"tiny body", make_version(1000, 0, "n1"))
        orphan = os.urandom(100_000)
        orphan_sha = store.chunks.write(orphan, hashlib.sha256(orphan).hexdigest())
        loose = b"a small chunk stored by name that no entry references"  # e.g. its entry lost
        loose_sha = hashlib.sha256(loose).hexdigest()
        await store.in_db(store.db.put_small_chunk, loose_sha, loose)
        old = time.time() - 3600
        for sha in (*gone.chunks, *kept.chunks, orphan_sha):
            assert store.chunks.touch(sha, old)

        assert await store.collect_garbage(60) == 0  # nothing lost its references yet
        await store.apply_entries(
            [ManifestEntry.tombstone(k, make_version(2000, 0, "n1"), time.time()) for k in ("gone", "small")]
        )
        assert not store.db.has_small_chunk(small.chunks[0])  # inline: gone with its row
        assert await store.collect_garbage(60) == 1  # the deleted file's chunk
        assert not store.chunks.has(gone.chunks[0])
        assert store.chunks.has(orphan_sha)  # an orphan needs the full scan
        assert store.db.unreferenced_chunks() == []  # their zero-reference rows are forgotten

        young = os.urandom(100_000)
        young_sha = store.chunks.write(young, hashlib.sha256(young).hexdigest())
        assert await store.collect_garbage(60, full=True) == 2
        assert not store.chunks.has(orphan_sha) and not store.db.has_small_chunk(loose_sha)
        assert store.chunks.has(young_sha)  # may be staged for a commit still on its way
        assert store.chunks.has(kept.chunks[0])
        assert await store.read_chunk(kept.chunks[0])
    finally:
        store.close()


def old_file(store: LocalStore, data: bytes) -> str:
    """A chunk no entry references (a segment record), old enough to collect (what a crash
    leaves)."""
    sha = store.chunks.write(data, hashlib.sha256(data).hexdigest())
    old = time.time() - 3600
    assert store.chunks.touch(sha, old)
    return sha


async def test_orphan_walk_pages_collect_every_orphan_and_no_live_chunk(tmp_path: Path) -> None:
    """The housekeeper's orphan walk, ten names a round: each page checks at most its share,
    the walk ends once every name was seen, and it removed exactly the orphans (segment records
    and chunks stored by name), never a chunk an entry references."""
    store = LocalStore(tmp_path, chunk_size=MiB, fsync="never")
    try:
        live = [
            await stored(store, f"live/{i}", os.urandom(70_000), make_version(1000, i, "n1"))
            for i in range(12)
        ]
        for e in live:
            assert store.chunks.touch(e.chunks[0], time.time() - 3600)
        orphans = {old_file(store, os.urandom(70_000)) for _ in range(15)}
        for i in range(8):
            loose = b"stored by name, its entry lost %d" % i
            orphans.add(hashlib.sha256(loose).hexdigest())
            await store.in_db(store.db.put_small_chunk, hashlib.sha256(loose).hexdigest(), loose)
        hk = Housekeeper(store, None, None, lambda: False, NodeConfig(gc_scan_rate=10))  # type: ignore[arg-type]
        removed, steps = 0, 0
        while hk.orphan_walks == 0:
            before = hk.orphan_names_checked
            hk._orphan_step_at = time.monotonic() - 1.0  # one second's worth: 10 names
            removed += await hk.orphan_step(60)
            assert hk.orphan_names_checked - before <= 10
            steps += 1
            assert steps <= 5, "35 names at 10 a round take 4 rounds"
        assert steps == 4 and hk.orphan_names_checked == 35 and removed == len(orphans)
        assert not any(store.has_chunk(sha) for sha in orphans)
        for e in live:
            assert await store.read_chunk(e.chunks[0])
        assert await hk.orphan_step(60) == 0 and hk.orphan_walks == 1  # the next walk waits an hour
    finally:
        store.close()


async def test_a_write_racing_the_orphan_walk_keeps_its_chunk(tmp_path: Path) -> None:
    """The walk lists a page (the orphan is unreferenced then); a write of the same bytes
    commits before the deletion; the deletion re-checks under the GC lock and keeps it, while
    a true orphan on the same page goes."""
    store = LocalStore(tmp_path, chunk_size=MiB, fsync="never")
    try:
        body = os.urandom(100_000)
        racing = old_file(store, body)
        orphan = old_file(store, os.urandom(100_000))
        candidates, checked, nxt = await store.in_io(store.orphan_page, "", 100)
        assert sorted(candidates) == sorted([racing, orphan]) and checked == 2 and nxt is None
        entry = await stored(store, "racing", body, make_version(1000, 0, "n1"))  # dedupes onto it
        assert entry.chunks == (racing,)
        assert store.chunks.touch(racing, time.time() - 3600)  # even if nothing touched it
        assert await store.delete_unreferenced(candidates, 60) == 1
        assert store.chunks.has(racing) and not store.chunks.has(orphan)
        assert await store.read_chunk(racing) == body
        assert await store.collect_garbage(60, full=True) == 0  # a whole walk finds nothing more
    finally:
        store.close()
