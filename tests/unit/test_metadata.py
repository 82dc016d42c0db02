"""The metadata database: last-writer-wins apply, the Merkle tree it keeps, and upgrades of older files."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from p2pstore.core.manifest import ManifestEntry, entry_hash
from p2pstore.core.merkle import MerkleTree, leaf_of
from p2pstore.storage.metadata import MetadataDB


def entry(key: str, version: int, deleted: bool = False) -> ManifestEntry:
    v = f"{version:013d}.000000.n"
    if deleted:
        return ManifestEntry.tombstone(key, v, 1.0)
    return ManifestEntry(key, v, 4, "a" * 64, ("b" * 64,), "x", False, 1.0)


def tree_of(entries: list[ManifestEntry]) -> MerkleTree:
    return MerkleTree.build((leaf_of(e.key), entry_hash(e)) for e in entries)


def test_apply_is_last_writer_wins_and_tree_matches(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    assert len(db.apply([entry("k", 2), entry("j", 1)])) == 2
    assert db.apply([entry("k", 1)]) == []  # older: ignored
    assert len(db.apply([entry("k", 3, deleted=True)])) == 1
    held = [entry("k", 3, deleted=True), entry("j", 1)]
    assert db.tree == db.build_merkle() == tree_of(held)
    assert db.chunk_refs("b" * 64) == 1
    for e in held:  # each stored hash sits in its key's leaf
        assert db.hashes_in_leaf(leaf_of(e.key)) == [(e.key, entry_hash(e))]


def reopened_as_older(path: Path, entries: list[ManifestEntry], downgrade: str) -> MetadataDB:
    """A database holding ``entries``, taken back to an older schema by ``downgrade``, opened again."""
    db = MetadataDB(path, "never")
    db.apply(entries)
    db.close()
    conn = sqlite3.connect(path)
    conn.executescript(downgrade)
    conn.commit()
    conn.close()
    return MetadataDB(path, "never")


def test_database_from_before_entry_hashes_is_upgraded(tmp_path: Path) -> None:
    older = (
        "DROP INDEX files_by_leaf; DELETE FROM kv; ALTER TABLE files DROP COLUMN ehash;"
        " ALTER TABLE files RENAME COLUMN leaf TO bucket; UPDATE files SET bucket = bucket / 64"
    )
    db = reopened_as_older(tmp_path / "m.sqlite", [entry("k", 1), entry("j", 2)], older)
    assert db.tree == db.build_merkle() == tree_of([entry("k", 1), entry("j", 2)])
    assert db.get("j") == entry("j", 2)


def test_database_from_before_merkle_leaves_is_upgraded(tmp_path: Path) -> None:
    """The bucket column held the digest bucket (0-1023), indexed alone; opened again it holds
    each key's Merkle leaf under the covering index, and the tree matches the entries."""
    entries = [entry(f"k{i}", i) for i in range(50)]
    older = (
        "DROP INDEX files_by_leaf; ALTER TABLE files RENAME COLUMN leaf TO bucket;"
        " CREATE INDEX files_by_bucket ON files (bucket); DELETE FROM kv;"
        " UPDATE files SET bucket = bucket / 64"
    )
    db = reopened_as_older(tmp_path / "m.sqlite", entries, older)
    assert db.tree_source == "rebuilt"
    assert db.tree == MerkleTree.build((leaf_of(e.key), entry_hash(e)) for e in entries)
    for e in entries[:5]:
        assert (e.key, entry_hash(e)) in db.hashes_in_leaf(leaf_of(e.key))
    indexes = {r[0] for r in db._read("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "files_by_leaf" in indexes and "files_by_bucket" not in indexes
    db.close()
    assert MetadataDB(tmp_path / "m.sqlite", "never").tree_source == "saved"


def test_database_with_the_leaf_column_named_bucket_is_upgraded(tmp_path: Path) -> None:
    """The leaf column was once named ``bucket``: renamed in place (its index follows), the
    saved tree still loads, and writes go on."""
    entries = [entry(f"k{i}", i) for i in range(20)]
    db = reopened_as_older(tmp_path / "m.sqlite", entries, "ALTER TABLE files RENAME COLUMN leaf TO bucket")
    columns = {r[1] for r in db._read("PRAGMA table_info(files)")}
    assert "leaf" in columns and "bucket" not in columns
    assert db.tree_source == "saved" and db.tree == db.build_merkle() == tree_of(entries)
    assert db.hashes_in_leaf(leaf_of("k3")) == [("k3", entry_hash(entries[3]))]
    db.apply([entry("new", 1)])
    assert db.tree == tree_of([*entries, entry("new", 1)])
    db.close()


def test_object_metadata_is_stored_with_its_entry(tmp_path: Path) -> None:
    """An entry's metadata survives the database (and a reopen); a newer version without
    metadata replaces it whole; entries without any store none."""
    path = tmp_path / "m.sqlite"
    db = MetadataDB(path, "never")
    tagged = dataclasses.replace(entry("k", 1), meta=(("content-language", "fr"), ("md5", "f" * 32)))
    db.apply([tagged, entry("j", 1)])
    db.close()
    db = MetadataDB(path, "never")
    assert db.get("k") == tagged and db.get("k").meta == tagged.meta
    assert db.list("", "", 10) == [entry("j", 1), tagged]
    assert db.get("j").meta == ()
    db.apply([entry("k", 2)])
    assert db.get("k").meta == ()
    db.close()


def test_database_from_before_object_metadata_is_upgraded(tmp_path: Path) -> None:
    older = "ALTER TABLE files DROP COLUMN meta"
    db = reopened_as_older(tmp_path / "m.sqlite", [entry("k", 1)], older)
    assert db.get("k") == entry("k", 1)
    tagged = dataclasses.replace(entry("k", 2), meta=(("md5", "0" * 32),))
    db.apply([tagged])
    assert db.get("k") == tagged
    db.close()


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
    db.drop_small_chunks([sha])
    assert db.get_with_small("small") == (small, False)
    db.close()


def small_file(key: str, version: int, body: bytes) -> tuple[ManifestEntry, dict[str, bytes]]:
    sha = hashlib.sha256(body).hexdigest()
    version_str = f"{version:013d}.000000.n"
    return ManifestEntry(key, version_str, len(body), sha, (sha,), "x", False, 1.0), {sha: body}


def table_rows(db: MetadataDB, table: str) -> list[tuple]:
    return db._read(f"SELECT * FROM {table}")


def test_a_small_files_bytes_live_in_its_row_and_need_no_chunk_rows(tmp_path: Path) -> None:
    """Inline bytes: no reference count and no row by name (the random B-tree pages a small
    write saves), yet readable by the chunk's name like any stored chunk."""
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    small, data = small_file("s", 1, b"hello")
    sha = small.sha256
    assert len(db.apply_batch([([small], data)])[0]) == 1
    assert table_rows(db, "chunk_refs") == [] and table_rows(db, "small_chunks") == []
    assert db.get_with_small_data("s") == (small, b"hello")
    assert db.small_chunk(sha) == b"hello" and db.chunk_source(sha) == (b"hello", None)
    assert db.has_small_chunk(sha) and db.small_chunk_length(sha) == 5
    assert db.small_chunk_shas() == {sha} and db.loose_small_chunk_shas() == []
    assert db.referenced_chunks() == set() and db.unreferenced_chunks() == []

    # Replaced by a large file: the new row references its chunk; the old bytes went with the row.
    large = ManifestEntry("s", f"{2:013d}.000000.n", 4, "a" * 64, ("b" * 64,), "x", False, 1.0)
    db.apply([large])
    assert db.chunk_refs("b" * 64) == 1 and not db.has_small_chunk(sha)
    # ... and by a small one again: the large chunk's count drops, the new bytes are inline.
    again, data = small_file("s", 3, b"bye")
    db.apply_batch([([again], data)])
    assert db.chunk_refs("b" * 64) == 0 and db.unreferenced_chunks() == ["b" * 64]
    assert db.get_with_small_data("s") == (again, b"bye") and table_rows(db, "small_chunks") == []
    db.apply([ManifestEntry.tombstone("s", f"{4:013d}.000000.n", 1.0)])
    assert db.small_chunk_shas() == set() and db.chunk_refs(again.sha256) == 0
    db.close()


def test_small_bytes_whose_entry_loses_are_kept_by_name(tmp_path: Path) -> None:
    """An entry applied without its bytes (gossip first), then the write with the bytes: the
    same version wins nothing, and the bytes are kept as a chunk by name, so the file is whole."""
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    small, data = small_file("s", 1, b"hello")
    db.apply([small])
    assert db.get_with_small("s") == (small, False) and db.referenced_chunks() == {small.sha256}
    assert db.apply_batch([([small], data)]) == [[]]
    assert db.get_with_small("s") == (small, True) and db.get_with_small_data("s") == (small, b"hello")
    assert db.loose_small_chunk_shas() == [small.sha256]
    db.close()


def test_dropping_a_small_chunk_takes_inline_copies_too_and_their_rows_reference_it(tmp_path: Path) -> None:
    """Quarantine and handoff: every copy goes; the rows now miss their content, and reference
    it like any row whose chunk is elsewhere, so repair sees it missing and GC keeps it."""
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    a, data = small_file("a", 1, b"same")
    b, _ = small_file("b", 1, b"same")
    c, other = small_file("c", 1, b"other")
    db.apply_batch([([a, b], data), ([c], other)])
    assert db.drop_small_chunks([a.sha256]) == 2
    assert db.get_with_small("a") == (a, False) and db.get_with_small("b") == (b, False)
    assert db.chunk_refs(a.sha256) == 2 and not db.has_small_chunk(a.sha256)
    assert db.get_with_small_data("c") == (c, b"other")
    db.put_small_chunk(a.sha256, b"same")  # repaired: stored by name
    assert db.get_with_small("a") == (a, True)
    newer, _ = small_file("a", 2, b"new")
    db.apply([newer])  # without bytes: the old row's reference goes, the new one's comes
    assert db.chunk_refs(a.sha256) == 1 and db.chunk_refs(newer.sha256) == 1
    db.close()


def test_database_from_before_inline_small_files_is_upgraded(tmp_path: Path) -> None:
    """Rows written before keep their chunks by name and references; new small files go inline."""
    path = tmp_path / "m.sqlite"
    old, data = small_file("old", 1, b"old bytes")
    db = MetadataDB(path, "never")
    db.apply([old])
    db.put_small_chunk(old.sha256, b"old bytes")
    db.close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP INDEX files_inline_by_sha; ALTER TABLE files DROP COLUMN data")
    conn.close()
    db = MetadataDB(path, "never")
    assert db.get_with_small_data("old") == (old, b"old bytes") and db.chunk_refs(old.sha256) == 1
    new, data = small_file("new", 1, b"new bytes")
    db.apply_batch([([new], data)])
    assert db.get_with_small_data("new") == (new, b"new bytes") and db.chunk_refs(new.sha256) == 0
    assert db.small_chunk_shas() == {old.sha256, new.sha256}
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


def test_a_page_of_chunk_lists_after_a_key_says_which_rows_hold_their_bytes(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    try:
        db.apply([entry(k, 1) for k in ("e", "a", "d")] + [entry("c", 1, deleted=True)])
        small, body = small_file("b", 1, b"tiny")
        db.apply_batch([([small], body)])
        first = [("a", False, ("b" * 64,), False), ("b", False, small.chunks, True)]  # b: inline
        assert db.chunk_lists_after("", 2) == first
        assert db.chunk_lists_after("b", 2) == [("c", True, (), False), ("d", False, ("b" * 64,), False)]
        assert db.chunk_lists_after("d", 2) == [("e", False, ("b" * 64,), False)]
        assert db.chunk_lists_after("e", 2) == []
    finally:
        db.close()


def test_old_tombstones_are_found_by_their_index_in_key_order(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    try:
        old = [dataclasses.replace(entry(k, 1, deleted=True), modified=100.0) for k in ("z", "c", "m")]
        young = dataclasses.replace(entry("a", 1, deleted=True), modified=900.0)
        db.apply([*old, young, entry("b", 1)])
        assert [t.key for t in db.tombstones_before(500.0)] == ["c", "m", "z"]
        assert [t.key for t in db.tombstones_before(500.0, limit=2)] == ["c", "m"]
        assert [t.key for t in db.tombstones_before(1000.0)] == ["a", "c", "m", "z"]
        sql = "SELECT key FROM files INDEXED BY files_tombstones WHERE deleted = 1 AND modified < 1"
        plan = db._read(f"EXPLAIN QUERY PLAN {sql}")
        assert any("files_tombstones" in row[-1] for row in plan)  # a search of the index, no table scan
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
