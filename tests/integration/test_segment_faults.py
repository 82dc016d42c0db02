"""Disk faults that only segment files can have, on a real store in a temp dir: a record cut
short, a segment file lost, the space of deleted records. Each is what the store promises for
chunk files too: bad bytes are never served and are repaired, deleted bytes are freed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from p2pstore.errors import CorruptData
from p2pstore.storage.store import LocalStore
from tests.support.chunks import stored_chunks

MiB = 1 << 20


def open_store(path: Path) -> LocalStore:
    return LocalStore(path, chunk_size=4 * MiB, fsync="always")


async def repaired_record(tmp_path: Path) -> tuple[bytes, str]:
    """One chunk written whole (as repair writes it) into a segment that is then sealed (the
    store closed: no process appends to it again)."""
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    store = open_store(tmp_path)
    try:
        await store.write_chunk(data, sha)
    finally:
        store.close()
    assert stored_chunks(tmp_path)[sha].in_segment
    return data, sha


async def test_a_record_cut_short_is_corrupt_and_repaired(tmp_path: Path) -> None:
    data, sha = await repaired_record(tmp_path)
    where = stored_chunks(tmp_path)[sha]
    os.truncate(where.path, where.offset + 1000)  # the disk lost the record's tail
    store = open_store(tmp_path)
    try:
        assert await store.verify_chunks([sha], 0) == [(sha, len(data), False)]  # the scrubber's look
        with pytest.raises(CorruptData):
            await store.read_chunk(sha)
        await store.quarantine_chunk(sha)
        assert not store.has_chunk(sha)
        await store.write_chunk(data, sha)  # what repair does with a good copy from a peer
        assert await store.read_chunk(sha) == data
    finally:
        store.close()


async def test_a_chunk_whose_segment_file_was_lost_is_repaired(tmp_path: Path) -> None:
    data, sha = await repaired_record(tmp_path)
    store = open_store(tmp_path)
    try:
        os.unlink(stored_chunks(tmp_path)[sha].path)  # lost while the node runs
        assert await store.verify_chunks([sha], 0) == [(sha, len(data), False)]
        await store.quarantine_chunk(sha)
        assert not store.has_chunk(sha)
        await store.write_chunk(data, sha)
        assert await store.read_chunk(sha) == data
    finally:
        store.close()


async def test_the_space_of_deleted_records_comes_back_without_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        shas = []
        for _ in range(8):
            data = os.urandom(MiB)
            shas.append(hashlib.sha256(data).hexdigest())
            await store.write_chunk(data, shas[-1])
        for sha in shas:
            store.chunks.delete(sha)
        assert stored_chunks(tmp_path) == {}
        assert await store.in_io(store.chunks.compact) >= 8 * MiB
        live, total = store.chunks.segments.live_bytes()
        assert live == 0 and total < MiB, (live, total)
    finally:
        store.close()


async def test_deleted_records_of_a_sealed_segment_are_compacted_and_the_rest_kept(tmp_path: Path) -> None:
    """After a restart the old segment is sealed; deleting most of it lets compaction copy the
    live records to the active segment and unlink it."""
    store = open_store(tmp_path)
    bodies = {}
    try:
        for _ in range(6):
            data = os.urandom(MiB // 2)
            bodies[hashlib.sha256(data).hexdigest()] = data
            await store.write_chunk(data, hashlib.sha256(data).hexdigest())
    finally:
        store.close()
    store = open_store(tmp_path)
    try:
        old = {c.path for c in stored_chunks(tmp_path).values()}
        assert len(old) == 1
        keep = sorted(bodies)[0]
        for sha in sorted(bodies)[1:]:
            store.chunks.delete(sha)
        assert await store.in_io(store.chunks.compact) > 4 * (MiB // 2)
        assert not any(p.exists() for p in old)
        assert stored_chunks(tmp_path).keys() == {keep} and stored_chunks(tmp_path)[keep].path not in old
        assert await store.read_chunk(keep) == bodies[keep]
    finally:
        store.close()
