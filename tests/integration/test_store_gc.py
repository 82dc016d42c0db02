"""Chunk garbage collection on a real store in a temp dir: a chunk whose last reference went is
collected by the cheap round, an orphan file only by the full scan, young or referenced chunks
never."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

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
            os.utime(store.chunks.path(sha), (old, old))

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
