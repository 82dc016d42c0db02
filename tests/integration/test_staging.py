"""Staging an upload into chunk files on a real store in a temp dir: whatever the sizes of the
pieces the network delivers, the chunks are cut at the same offsets, named by their sha256 and
hold exactly their bytes; small bodies stay in memory; a failed upload leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.errors import BadRequest, PayloadTooLarge
from p2pstore.storage.store import SMALL_CHUNK, LocalStore

CHUNK = 256 * 1024


async def in_pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at, i = 0, 0
    while at < len(data):
        n = sizes[i % len(sizes)]
        yield data[at : at + n]
        at, i = at + n, i + 1


def expected_chunks(data: bytes, chunk: int) -> list[str]:
    return [hashlib.sha256(data[i : i + chunk]).hexdigest() for i in range(0, len(data), chunk)]


@pytest.mark.parametrize(
    "size", [0, 1, SMALL_CHUNK, SMALL_CHUNK + 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 12345]
)
async def test_chunks_are_cut_at_the_same_offsets_whatever_the_pieces(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    rng = random.Random(size)
    for n, sizes in enumerate(([size or 1], [1000], [65536], [rng.randrange(1, 400_000) for _ in range(50)])):
        store = LocalStore(tmp_path / f"s{n}", chunk_size=CHUNK, fsync="always")
        try:
            blob = await store.write_stream(in_pieces(data, sizes), hashlib.sha256(data).hexdigest())
            assert blob.size == size and blob.sha256 == hashlib.sha256(data).hexdigest()
            if 0 < size <= SMALL_CHUNK:
                assert blob.inline == data and blob.chunks == (hashlib.sha256(data).hexdigest(),)
                assert not blob.staging.exists()
                continue
            assert blob.inline is None
            assert list(blob.chunks) == expected_chunks(data, CHUNK)
            staged = {p.name: p.read_bytes() for p in blob.staging.iterdir()} if size else {}
            assert set(staged) == set(blob.chunks)  # nothing else left in the folder
            for sha, body in staged.items():
                assert hashlib.sha256(body).hexdigest() == sha
            entry = ManifestEntry(
                key="k", version=make_version(1000, 0, "n1"), size=size, sha256=blob.sha256,
                chunks=blob.chunks, content_type="application/octet-stream", deleted=False,
                modified=time.time(),
            )  # fmt: skip
            assert await store.commit(blob, entry)
            got = b"".join([await store.read_chunk(sha) for sha in entry.chunks])
            assert got == data
        finally:
            store.close()


async def test_repeated_and_already_stored_chunks_are_kept_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, chunk_size=CHUNK, fsync="never")
    try:
        part = os.urandom(CHUNK)
        data = part * 3 + b"tail" * 1000
        blob = await store.write_stream(in_pieces(data, [100_000]))
        assert blob.chunks[:3] == (hashlib.sha256(part).hexdigest(),) * 3
        assert len(list(blob.staging.iterdir())) == 2  # the repeated chunk once, and the tail
        entry = ManifestEntry(
            key="k", version=make_version(1000, 0, "n1"), size=len(data), sha256=blob.sha256,
            chunks=blob.chunks, content_type="application/octet-stream", deleted=False, modified=time.time(),
        )  # fmt: skip
        assert await store.commit(blob, entry)
        again = await store.write_stream(in_pieces(data, [CHUNK]))
        assert again.chunks == blob.chunks
        assert not again.staging.exists() or not list(again.staging.iterdir())  # all stored already
    finally:
        store.close()


async def test_a_failed_upload_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, chunk_size=CHUNK, fsync="always")
    try:
        data = os.urandom(3 * CHUNK)
        with pytest.raises(BadRequest):
            await store.write_stream(in_pieces(data, [70_000]), expected_sha="0" * 64)
        with pytest.raises(BadRequest):
            await store.write_stream(in_pieces(data, [70_000]), expected_size=len(data) + 1)
        with pytest.raises(PayloadTooLarge):
            await store.write_stream(in_pieces(data, [70_000]), max_size=CHUNK + 5)

        async def broken() -> AsyncIterator[bytes]:
            yield data[:CHUNK + 100]
            raise ConnectionResetError("client went away")

        with pytest.raises(ConnectionResetError):
            await store.write_stream(broken())
        assert list(store.chunks.tmp_dir.iterdir()) == []
        assert list(store.chunks.iter_shas()) == []
    finally:
        store.close()
