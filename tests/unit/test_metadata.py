"""The metadata database: last-writer-wins apply, digests, and upgrades of older files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from p2pstore.core.manifest import BucketDigest, ManifestEntry, bucket_of, sub_digest, sub_digest_of_hashes
from p2pstore.storage.metadata import MetadataDB


def entry(key: str, version: int, deleted: bool = False) -> ManifestEntry:
    v = f"{version:013d}.000000.n"
    if deleted:
        return ManifestEntry.tombstone(key, v, 1.0)
    return ManifestEntry(key, v, 4, "a" * 64, ("b" * 64,), "x", False, 1.0)


def test_apply_is_last_writer_wins_and_digest_matches(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    assert len(db.apply([entry("k", 2), entry("j", 1)])) == 2
    assert db.apply([entry("k", 1)]) == []  # older: ignored
    assert len(db.apply([entry("k", 3, deleted=True)])) == 1
    ref = BucketDigest()
    for e in (entry("k", 3, deleted=True), entry("j", 1)):
        ref.add(e)
    assert db.build_digest().root() == ref.root()
    assert db.chunk_refs("b" * 64) == 1
    for e in (entry("k", 3, deleted=True), entry("j", 1)):  # stored hashes give the same sub-digests
        bucket = bucket_of(e.key)
        stored = sub_digest_of_hashes(db.hashes_in_bucket(bucket))
        assert stored == sub_digest(db.entries_in_bucket(bucket))


def reopened_as_older(path: Path, entries: list[ManifestEntry], downgrade: str) -> MetadataDB:
    """A database holding ``entries``, taken back to an older schema by ``downgrade``, opened again."""
    db = MetadataDB(path, "never")
    db.apply(entries)
    db.close()
    conn = sqlite3.connect(path)
    conn.execute(downgrade)
    conn.commit()
    conn.close()
    return MetadataDB(path, "never")


def test_database_from_before_entry_hashes_is_upgraded(tmp_path: Path) -> None:
    older = "ALTER TABLE files DROP COLUMN ehash"
    db = reopened_as_older(tmp_path / "m.sqlite", [entry("k", 1), entry("j", 2)], older)
    ref = BucketDigest()
    ref.add(entry("k", 1))
    ref.add(entry("j", 2))
    assert db.build_digest().root() == ref.root()
    assert db.get("j") == entry("j", 2)


def test_database_from_before_read_sums_is_upgraded(tmp_path: Path) -> None:
    db = reopened_as_older(tmp_path / "m.sqlite", [entry("k", 1)], "DROP TABLE chunk_sums")
    assert db.chunk_source("b" * 64) == (None, None)
    db.apply_batch([([entry("j", 2)], {})], {"b" * 64: b"s" * 16})
    assert db.chunk_source("b" * 64) == (None, b"s" * 16)
    assert db.get("k") == entry("k", 1)
    db.close()


def test_committed_pages_reach_the_database_file_without_a_commit_doing_it(tmp_path: Path) -> None:
    """A background thread checkpoints the WAL (no commit pays for it); closing stops it."""
    path = tmp_path / "m.sqlite"
    before = set(threading.enumerate())
    db = MetadataDB(path, "always")
    start = path.stat().st_size
    db.apply([entry(f"key-{i:05d}", 1) for i in range(300)])  # ~40 pages: far below any auto-checkpoint
    deadline = time.monotonic() + 10
    while path.stat().st_size <= start:
        assert time.monotonic() < deadline, "the WAL was never copied into the database file"
        time.sleep(0.05)
    db.close()
    assert not [t for t in threading.enumerate() if t.name == "p2pstore-wal" and t not in before]


def test_a_lookup_tells_whether_a_small_files_content_is_here(tmp_path: Path) -> None:
    """get_with_small: the entry plus whether its only chunk is stored in the database, in one
    query (a read's version lookup); files whose chunk is elsewhere or absent say False."""
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    sha = "c" * 64
    small = ManifestEntry("small", f"{1:013d}.000000.n", 3, sha, (sha,), "x", False, 1.0)
    db.apply_batch([([small], {sha: b"abc"})])
    assert db.get_with_small("small") == (small, True)
    assert db.get_with_small("j") == (None, False)
    db.apply([entry("j", 1)])  # its chunk is not named like the file's sha256, and not stored
    assert db.get_with_small("j") == (entry("j", 1), False)
    db.delete_small_chunks([sha])
    assert db.get_with_small("small") == (small, False)
    db.close()


def test_chunk_lists_of_every_entry_in_key_order_across_batches(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    try:
        db.apply([entry(k, 1) for k in ("e", "a", "d", "b")] + [entry("c", 1, deleted=True)])
        rows = list(db.iter_chunk_lists(batch=2))
        assert rows == [("a", False, ("b" * 64,)), ("b", False, ("b" * 64,)), ("c", True, ()),
                        ("d", False, ("b" * 64,)), ("e", False, ("b" * 64,))]  # fmt: skip
        assert rows == [(e.key, e.deleted, e.chunks) for e in db.iter_all()]
    finally:
        db.close()


def test_small_values_stored_together_are_all_or_none(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "always")
    try:
        db.set_states({"term": b"5", "voted_for": b"n1"})
        assert (db.get_state("term"), db.get_state("voted_for")) == (b"5", b"n1")
        with pytest.raises(sqlite3.Error):  # the second value cannot be stored
            db.set_states({"term": b"6", "voted_for": object()})  # type: ignore[dict-item]
        assert (db.get_state("term"), db.get_state("voted_for")) == (b"5", b"n1")  # no new term alone
    finally:
        db.close()
    reopened = MetadataDB(tmp_path / "m.sqlite", "always")
    try:
        assert reopened.get_state("term") == b"5"
    finally:
        reopened.close()
