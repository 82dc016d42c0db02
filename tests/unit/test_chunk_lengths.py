"""Entries with uneven chunk lengths (objects composed from parts): wire form, validation,
merge order, SQLite storage, and the spans reads cut the object by."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from p2pstore.cluster.compose import stored_lengths
from p2pstore.cluster.reads import chunk_spans
from p2pstore.core.manifest import ManifestEntry, entry_hash, merge
from p2pstore.storage.metadata import MetadataDB

MiB = 1024 * 1024
V = "0000000001000.000000.n1"


def composed(lengths: tuple[int, ...], key: str = "k") -> ManifestEntry:
    chunks = tuple(f"{i + 1:064x}" for i in range(len(lengths)))
    return ManifestEntry(key, V, sum(lengths), "a" * 64, chunks, "x", False, 1.0, lengths=lengths)


class NoLocalFiles:
    def chunk_length(self, sha: str) -> int | None:
        return None


def test_stored_lengths_cut_the_object_even_when_count_and_size_fit_the_usual_layout() -> None:
    # parts of 7 MiB and 8 MiB with 4 MiB chunks: 4 chunks, 15 MiB, which the usual layout
    # (4 + 4 + 4 + 3) would also fit, wrongly
    e = composed((4 * MiB, 3 * MiB, 4 * MiB, 4 * MiB))
    spans = chunk_spans(e, 4 * MiB, NoLocalFiles())  # type: ignore[arg-type]
    assert [(off, n) for _, off, n in spans or []] == [
        (0, 4 * MiB),
        (4 * MiB, 3 * MiB),
        (7 * MiB, 4 * MiB),
        (11 * MiB, 4 * MiB),
    ]
    assert [sha for sha, _, _ in spans or []] == list(e.chunks)


def test_entries_without_lengths_keep_the_usual_layout() -> None:
    e = ManifestEntry("k", V, 9 * MiB, "a" * 64, ("1" * 64, "2" * 64, "3" * 64), "x", False, 1.0)
    spans = chunk_spans(e, 4 * MiB, NoLocalFiles())  # type: ignore[arg-type]
    assert [(off, n) for _, off, n in spans or []] == [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, MiB)]
    assert "lengths" not in e.to_wire()


def test_lengths_travel_on_the_wire_and_old_entries_parse() -> None:
    e = composed((5, 3, 7))
    assert e.to_wire()["lengths"] == [5, 3, 7]
    assert ManifestEntry.from_wire(e.to_wire()) == e
    old = {k: v for k, v in e.to_wire().items() if k != "lengths"}
    assert ManifestEntry.from_wire(old).lengths == ()


@pytest.mark.parametrize(
    "lengths",
    [[5, 3], [5, 3, 6], [5, 0, 8], [5, -1, 9], [5, 3, 7.0], [5, True, 9], "5,3,7"],
)
def test_lengths_that_do_not_describe_the_chunks_are_refused(lengths: object) -> None:
    wire = composed((5, 3, 7)).to_wire()
    wire["lengths"] = lengths
    with pytest.raises(ValueError):
        ManifestEntry.from_wire(wire)


def test_a_chunk_named_twice_has_one_length() -> None:
    same = "c" * 64
    ok = ManifestEntry("k", V, 10, "a" * 64, (same, same), "x", False, 1.0, lengths=(5, 5))
    assert ok.validate() is ok
    with pytest.raises(ValueError, match="same length"):
        ManifestEntry("k", V, 10, "a" * 64, (same, same), "x", False, 1.0, lengths=(4, 6)).validate()


def test_lengths_count_in_the_hash_and_the_merge_order() -> None:
    a, b = composed((5, 3, 7)), composed((5, 4, 6))
    assert entry_hash(a) != entry_hash(b)
    assert merge(a, b) == merge(b, a)  # same version, different lengths: every replica agrees
    plain = ManifestEntry("k", V, 4, "a" * 64, ("b" * 64,), "x", False, 1.0)
    assert entry_hash(plain) == entry_hash(ManifestEntry.from_wire(plain.to_wire()))


def test_lengths_are_stored_in_sqlite_and_an_older_database_is_upgraded(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    e = composed((5, 3, 7))
    db.apply([e])
    assert db.get("k") == e
    db.close()
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    assert db.get("k") == e
    db.close()
    conn = sqlite3.connect(tmp_path / "old.sqlite")  # a files table from before stored lengths
    conn.execute(
        "CREATE TABLE files (key TEXT PRIMARY KEY, version TEXT NOT NULL, size INTEGER NOT NULL,"
        " sha256 TEXT NOT NULL, chunks BLOB NOT NULL, content_type TEXT NOT NULL, deleted INTEGER NOT NULL,"
        " modified REAL NOT NULL, bucket INTEGER NOT NULL, ehash BLOB NOT NULL, data BLOB, meta BLOB)"
        " WITHOUT ROWID"
    )
    conn.commit()
    conn.close()
    db = MetadataDB(tmp_path / "old.sqlite", "never")
    db.apply([e, composed((4,), key="j")])
    assert db.get("k") == e and db.get("j").lengths == (4,)  # type: ignore[union-attr]
    db.close()


def test_lengths_are_stored_only_when_the_layout_is_not_the_usual_one() -> None:
    assert stored_lengths([4, 4, 1], 4) == ()
    assert stored_lengths([4, 3, 4, 4], 4) == (4, 3, 4, 4)
    assert stored_lengths([3], 4) == ()
