"""Read sums: every chunk a node writes gets the xxh3-128 of the bytes whose sha256 it
computed or checked, and reads check that instead of the sha256. A wrong or missing sum may only
cost time: a good chunk is never refused, a bad one never served."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from p2pstore.cluster.repair import SCRUB_BUSY_SLOWDOWN, SCRUB_MIN_COST, Scrubber
from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.errors import CorruptData
from p2pstore.storage import chunks as chunks_module
from p2pstore.storage.checkpoint import DB_NAME
from p2pstore.storage.chunks import read_sum
from p2pstore.storage.store import LocalStore
from tests.support.chunks import overwrite_chunk, read_chunk, stored_chunks
from tests.support.http import generated_body, generated_sha256
from tests.support.processes import wait_for
from tests.support.rot import rotted

CHUNK = 256 * 1024


async def pieces(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def entry_for(key: str, blob_size: int, sha: str, chunk_list: tuple[str, ...], deleted: bool = False):
    return ManifestEntry(
        key=key, version=make_version(int(time.time() * 1000), 0, "n1"), size=blob_size, sha256=sha,
        chunks=chunk_list, content_type="application/octet-stream", deleted=deleted, modified=time.time(),
    )  # fmt: skip


async def stored_file(store: LocalStore, key: str, data: bytes) -> ManifestEntry:
    blob = await store.write_stream(pieces(data))
    entry = entry_for(key, blob.size, blob.sha256 or "", blob.chunks)
    assert await store.commit(blob, entry)
    return entry


def recorded_sum(store: LocalStore, sha: str) -> bytes | None:
    return store.db.chunk_source(sha)[1]


class CountingSha256:
    """Stands in for hashlib in the chunk store: counts the sha256 objects made."""

    def __init__(self) -> None:
        self.calls = 0

    def sha256(self, *args):
        self.calls += 1
        return hashlib.sha256(*args)


@pytest.fixture
async def store(tmp_path: Path):
    s = LocalStore(tmp_path / "store", chunk_size=CHUNK, fsync="never")
    yield s
    s.close()


async def test_staged_chunks_get_the_read_sum_of_their_bytes_and_reads_skip_sha256(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * CHUNK + 777)
    entry = await stored_file(store, "k", data)
    assert len(entry.chunks) == 4
    for sha in entry.chunks:
        on_disk = Path(store.chunks.file(sha)).read_bytes()
        assert recorded_sum(store, sha) == read_sum(on_disk)
    counter = CountingSha256()
    monkeypatch.setattr(chunks_module, "hashlib", counter)
    got = b"".join([await store.read_chunk(sha) for sha in entry.chunks])
    assert got == data
    assert counter.calls == 0  # checked against the read sums only


async def test_a_flipped_byte_is_refused_with_a_read_sum_recorded(store: LocalStore) -> None:
    entry = await stored_file(store, "k", os.urandom(2 * CHUNK))
    sha = entry.chunks[1]
    assert recorded_sum(store, sha) is not None
    path = Path(store.chunks.file(sha))
    raw = bytearray(path.read_bytes())
    raw[CHUNK // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptData):
        await store.read_chunk(sha)
    assert store.stats.corrupt_chunks_found == 1
    await store.read_chunk(entry.chunks[0])  # the other chunk is still served


async def test_a_wrong_sum_never_refuses_a_good_chunk_and_is_corrected(store: LocalStore) -> None:
    data = os.urandom(CHUNK)
    entry = await stored_file(store, "k", data)
    sha = entry.chunks[0]
    await store.in_db(store.db.apply_batch, [], {sha: b"\0" * 16})  # as if recorded wrongly
    assert recorded_sum(store, sha) == b"\0" * 16
    assert await store.read_chunk(sha) == data  # the sha256 decided
    assert store.stats.corrupt_chunks_found == 0
    await stored_file(store, "other", os.urandom(CHUNK))  # the next commit records the right one
    assert recorded_sum(store, sha) == read_sum(data)


async def test_a_chunk_without_a_sum_is_checked_by_sha256_and_then_gets_one(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks stored by an older version, or repaired: the first read pays the sha256."""
    data = os.urandom(CHUNK)
    entry = await stored_file(store, "k", data)
    sha = entry.chunks[0]
    await store.in_db(store.db.delete_chunk_sums, [sha])
    counter = CountingSha256()
    monkeypatch.setattr(chunks_module, "hashlib", counter)
    assert await store.read_chunk(sha) == data
    assert counter.calls == 1
    await stored_file(store, "other", os.urandom(100_000))
    assert recorded_sum(store, sha) == read_sum(data)
    assert await store.read_chunk(sha) == data
    assert counter.calls == 1  # not again


async def test_repaired_chunks_get_a_sum_and_collected_chunks_lose_theirs(store: LocalStore) -> None:
    data = os.urandom(CHUNK)
    sha = hashlib.sha256(data).hexdigest()
    await store.write_chunk(data, sha)  # what repair does with a chunk fetched and checked
    entry = entry_for("k", len(data), sha, (sha,))
    assert await store.apply_entries([entry])
    assert recorded_sum(store, sha) == read_sum(data)
    tombstone = entry_for("k", 0, "", (), deleted=True)
    assert await store.apply_entries([tombstone])
    assert await store.collect_garbage(min_age=-1) == 1
    assert not store.chunks.has(sha)
    assert recorded_sum(store, sha) is None


async def test_every_replica_records_the_sums_of_what_it_wrote(node_factory) -> None:
    """On real nodes: a 300 KiB file (with a Content-Length: sent to replicas as one raw body,
    a segment record) and a 5 MiB one (streamed: staged in 4 MiB chunk files) leave a read sum
    for each chunk, of the bytes on disk, on each of the three nodes."""
    nodes = node_factory(3, replicas=3, fsync="never")
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 20,
             message="every node knows all three")  # fmt: skip
    sizes = {"raw": 300 * 1024, "staged": 5 * 1024 * 1024}
    async with aiohttp.ClientSession() as s:
        for n, (key, size) in enumerate(sizes.items()):
            body = generated_body(size, seed=n)
            if key == "raw":  # whole, with its length: the one-phase write
                body = b"".join([piece async for piece in body])
            # w=3: acknowledged once all three replicas committed (none is still writing)
            async with s.put(f"{nodes[n].url}/files/{key}?w=3", data=body) as r:
                assert r.status == 201, await r.text()
            async with s.get(f"{nodes[2 - n].url}/files/{key}") as r:
                body = await r.read()
            assert r.status == 200 and hashlib.sha256(body).hexdigest() == generated_sha256(size, seed=n)
    for node in nodes:
        node.terminate()
        stored = stored_chunks(node.data_dir)
        assert sorted(c.in_segment for c in stored.values()) == [False, False, True]  # raw, 2 staged
        with sqlite3.connect(node.data_dir / DB_NAME) as db:
            sums = dict(db.execute("SELECT sha, xxh FROM chunk_sums"))
        assert {sha: read_sum(read_chunk(node.data_dir, sha)) for sha in stored}.items() <= sums.items()


async def scrub_one(store: LocalStore, sha: str) -> bool:
    """What the scrubber does for one chunk: check it against its sha256."""
    [(_, _, ok)] = await store.verify_chunks([sha], 0)
    return ok


async def test_the_scrubber_checks_sha256_and_mends_the_read_sum(store: LocalStore) -> None:
    data = os.urandom(CHUNK)
    entry = await stored_file(store, "k", data)
    sha = entry.chunks[0]
    await store.in_db(store.db.apply_batch, [], {sha: b"\0" * 16})
    assert await scrub_one(store, sha)
    await stored_file(store, "other", os.urandom(CHUNK))
    assert recorded_sum(store, sha) == read_sum(data)
    path = Path(store.chunks.file(sha))
    path.write_bytes(rotted(data))
    assert not await scrub_one(store, sha)
    assert not store.committer.sums  # nothing recorded for bad bytes


@pytest.mark.parametrize("bad", ["a", "b"])
async def test_the_scrubber_checks_every_inline_copy_of_a_small_chunk(store: LocalStore, bad: str) -> None:
    """Two files with the same small content each hold a copy: rot in either is found (not
    hidden by the good one), and quarantine takes every copy, so repair fetches a good one."""
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()
    for key in ("a", "b"):
        await stored_file(store, key, data)
    assert await scrub_one(store, sha)
    with contextlib.closing(sqlite3.connect(store.data_dir / DB_NAME)) as db, db:
        db.execute("UPDATE files SET data = ? WHERE key = ?", (rotted(data), bad))
    assert not await scrub_one(store, sha)
    await store.quarantine_chunk(sha)
    assert not store.has_chunk(sha, small=True)
    assert [store.get_with_presence(k)[1] for k in ("a", "b")] == [False, False]
    assert [p.read_bytes() for p in store.chunks.quarantine_dir.iterdir()] == [rotted(data)]
    await store.write_chunk(data, sha)  # what repair does with a good copy from a peer
    assert [store.get_with_presence(k)[1] for k in ("a", "b")] == [True, True]
    assert await scrub_one(store, sha)


def flip_small_chunk(store: LocalStore, sha: str) -> None:
    with contextlib.closing(sqlite3.connect(store.data_dir / DB_NAME)) as db, db:
        (data,) = db.execute("SELECT data FROM small_chunks WHERE sha = ?", (sha,)).fetchone()
        db.execute("UPDATE small_chunks SET data = ? WHERE sha = ?", (rotted(data), sha))
    assert store.db.small_chunk(sha) == rotted(data)


@pytest.mark.parametrize("busy", [False, True])
async def test_a_scrub_pass_checks_small_chunks_in_batches_and_finds_rot_of_both_kinds(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    small = [os.urandom(1000 + n) for n in range(200)]
    files = [os.urandom(CHUNK) for _ in range(3)] + [os.urandom(3 * 1024 * 1024 // 2)]
    shas = {hashlib.sha256(d).hexdigest(): d for d in small + files}
    for sha, data in shas.items():
        await store.write_chunk(data, sha)
    await stored_file(store, "k", small[0])  # a commit: the files' read sums are recorded
    mended_file, bad_file, _, big = (hashlib.sha256(d).hexdigest() for d in files)
    bad_small = hashlib.sha256(small[7]).hexdigest()
    assert overwrite_chunk(store.data_dir, bad_file, rotted(files[1])).in_segment  # written whole
    flip_small_chunk(store, bad_small)
    await store.in_db(store.db.apply_batch, [], {mended_file: b"\0" * 16})
    gone = "0" * 64  # listed, then deleted before the scrubber got to it
    listed = store.iter_chunk_shas
    monkeypatch.setattr(store, "iter_chunk_shas", lambda: [*listed(), gone])

    trips: list[list[str]] = []  # the chunks each trip to the I/O thread looked at
    in_io = store.in_io

    async def counting_in_io(fn: Any, *args: Any) -> Any:
        result = await in_io(fn, *args)
        trips.append([sha for sha, *_ in result] if fn.__name__ == "_check_chunks" else [])
        return result

    monkeypatch.setattr(store, "in_io", counting_in_io)
    on_loop: list[str] = []  # SQLite queries made on the event loop's thread
    read = store.db._read

    def noting_read(sql: str, args: tuple = ()) -> list[tuple]:
        if threading.current_thread() is threading.main_thread():
            on_loop.append(sql)
        return read(sql, args)

    monkeypatch.setattr(store.db, "_read", noting_read)
    reported: list[str] = []
    repairer = SimpleNamespace(trigger=list)
    scrubber = Scrubber(store, repairer, reported.append, lambda: busy, rate=1e15, chunk_rate=1e15)  # type: ignore[arg-type]
    charged: list[int] = []
    take = scrubber.limiter.take

    async def noting_take(nbytes: int) -> None:
        charged.append(nbytes)
        await take(nbytes)

    monkeypatch.setattr(scrubber.limiter, "take", noting_take)
    counted: list[int] = []  # what each chunk costs of the chunks/s budget
    take_chunk = scrubber.chunk_limiter.take

    async def noting_take_chunk(n: int) -> None:
        counted.append(n)
        await take_chunk(n)

    monkeypatch.setattr(scrubber.chunk_limiter, "take", noting_take_chunk)

    found = await scrubber.scrub_pass()

    assert sorted(found) == sorted(reported) == sorted([bad_file, bad_small])
    assert scrubber.stats.chunks_checked == len(shas) and scrubber.stats.corrupt_found == 2
    # Every copy is read: small[0] is stored by name and inline in file "k"'s row.
    assert scrubber.stats.bytes_checked == sum(map(len, shas.values())) + len(small[0])
    # One trip lists the chunks; 200 small ones take 4 of at most 64; the 1.5 MiB file goes
    # alone; the three 256 KiB ones may split the rest in two or share with small ones.
    assert sorted(sha for trip in trips for sha in trip) == sorted([*shas, gone])
    assert len(trips) <= 1 + 4 + 3 and [big] in trips
    costs = [SCRUB_MIN_COST] * len(small) + [len(f) for f in files]  # each chunk at least the minimum
    assert sorted(charged) == sorted(c * (SCRUB_BUSY_SLOWDOWN if busy else 1) for c in costs)
    # Every chunk checked counts against --scrub-chunk-rate too, ten times over while busy.
    assert counted == [SCRUB_BUSY_SLOWDOWN if busy else 1] * len(shas)
    # Nothing asked of SQLite on the loop but whether the bad small chunk is still there.
    assert len(on_loop) <= 1
    assert store.committer.sums == {mended_file: read_sum(files[0])}


async def test_a_chunk_read_in_pieces_is_verified_whole_before_any_piece_is_given(tmp_path: Path) -> None:
    """``read_chunk_pieces`` (what GETs and peers' chunk requests read): pieces of at most
    1 MiB that join to the chunk; a flipped byte in the last piece refuses them all; a wrong
    recorded sum is overruled by the sha256 and then corrected."""
    store = LocalStore(tmp_path / "store", chunk_size=4 * 1024 * 1024, fsync="never")
    try:
        data = os.urandom(3 * 1024 * 1024 + 999)
        sha = (await stored_file(store, "k", data)).chunks[0]
        got = await store.read_chunk_pieces(sha)
        assert len(got) == 4 and max(map(len, got)) == 1024 * 1024 and b"".join(got) == data
        await store.in_db(store.db.apply_batch, [], {sha: b"\0" * 16})  # as if recorded wrongly
        assert b"".join(await store.read_chunk_pieces(sha)) == data  # the sha256 decided
        await stored_file(store, "other", os.urandom(100_000))  # the next commit records the right one
        assert recorded_sum(store, sha) == read_sum(data)
        path = Path(store.chunks.file(sha))
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(CorruptData):
            await store.read_chunk_pieces(sha)
        assert store.stats.corrupt_chunks_found == 1
    finally:
        store.close()
