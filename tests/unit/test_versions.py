"""Kept versions (core/versions.py): which entry a replica keeps when a versioned entry is
superseded, in any arrival order, and that the metadata database keeps it with its bytes."""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path

from p2pstore.core import placement
from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.versions import (
    KEEP,
    archive_of,
    base_of,
    placement_key,
    version_id,
    version_key,
)
from p2pstore.storage.metadata import MetadataDB


def write(key: str, n: int, data: bytes, kept: bool = True) -> ManifestEntry:
    sha = hashlib.sha256(data).hexdigest()
    meta = ((KEEP, "1"),) if kept else ()
    return ManifestEntry(key, f"{n:013d}.000000.n", len(data), sha, (sha,), "t", False, 1.0, meta)


def marker(key: str, n: int) -> ManifestEntry:
    return ManifestEntry.tombstone(key, f"{n:013d}.000000.n", 1.0, ((KEEP, "1"),))


def test_version_keys_place_like_their_base_key() -> None:
    vk = version_key("b/dir/file.txt", "0000000000001.000000.n")
    assert base_of(vk) == "b/dir/file.txt" and placement_key(vk) == "b/dir/file.txt"
    assert base_of("b/dir/file.txt") is None
    nodes = [f"n{i}" for i in range(10)]
    assert placement.replicas(vk, nodes) == placement.replicas("b/dir/file.txt", nodes)
    ManifestEntry.tombstone(vk, "0000000000001.000000.n", 1.0).validate()  # a valid key
    long_key = "b/" + "x" * 1020  # at the key limit: its versions' keys are still valid
    write(long_key, 1, b"a").validate()
    v1 = "0000000000001.000000.n"
    ManifestEntry.tombstone(version_key(long_key, v1), v1, 1.0).validate()


def test_archive_of_keeps_the_loser_only_when_marked() -> None:
    a, b = write("b/k", 1, b"one"), write("b/k", 2, b"two")
    assert archive_of(a, b) == archive_of(b, a)  # arrival order does not matter
    kept = archive_of(a, b)
    assert kept is not None and kept.key == version_key("b/k", a.version) and kept.sha256 == a.sha256
    assert archive_of(None, a) is None
    assert archive_of(a, a) is None
    null = write("b/k", 1, b"one", kept=False)  # written before versioning was enabled
    assert archive_of(null, b).key == version_key("b/k", null.version)  # kept by a versioned write
    assert version_id(archive_of(null, b)) == "null"
    assert archive_of(null, write("b/k", 2, b"two", kept=False)) is None  # replaced: no versioning
    assert archive_of(ManifestEntry.tombstone("b/k", null.version, 1.0), b) is None  # no version
    assert archive_of(write("b/k", 2, b"two"), marker("b/k", 3)).key == version_key("b/k", b.version)
    gone = ManifestEntry.tombstone(kept.key, "0000000000009.000000.n", 1.0)
    assert archive_of(kept, gone) is None  # reserved keys are never kept again
    assert version_id(a) == a.version and version_id(write("b/k", 1, b"x", kept=False)) == "null"


def test_every_arrival_order_gives_the_same_manifest(tmp_path: Path) -> None:
    """Three writes and a delete marker, applied in every order (and twice), give every
    replica the same rows: the current marker and three kept versions, each with its bytes."""
    entries = [write("b/k", 1, b"one"), write("b/k", 2, b"two"), write("b/k", 3, b"three"), marker("b/k", 4)]
    states = set()
    for i, order in enumerate(itertools.permutations(entries)):
        db = MetadataDB(tmp_path / f"m{i}.sqlite", "never")
        for e in [*order, *order]:
            small = {} if e.deleted else {e.sha256: {1: b"one", 2: b"two", 3: b"three"}[int(e.version[:13])]}
            db.apply([e], small)
        rows = db.list("", include_deleted=True)
        states.add(tuple(rows))
        for n, data in ((1, b"one"), (2, b"two"), (3, b"three")):
            kept, small = db.get_with_small_data(version_key("b/k", f"{n:013d}.000000.n"))
            assert kept is not None and small == data
        db.close()
    assert len(states) == 1
    (rows,) = states
    assert len(rows) == 4 and rows[-1].key == "b/k" and rows[-1].deleted
    assert [base_of(r.key) for r in rows[:3]] == ["b/k"] * 3


def test_listing_a_thousand_versions_is_one_prefix_scan(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    for n in range(1, 1002):
        db.apply([write("b/k", n, b"v%d" % n)], {})
    db.apply([write("b/k2", 1, b"other")], {})
    t0 = time.perf_counter()
    found = [e for e in db.list(".p2pstore/versions/b/k/", limit=5000) if base_of(e.key) == "b/k"]
    elapsed = time.perf_counter() - t0
    assert len(found) == 1000
    print(f"listed 1,000 versions in {elapsed * 1000:.1f} ms")


def test_tombstone_gc_takes_plain_tombstones_never_delete_markers(tmp_path: Path) -> None:
    """A delete marker (current, or kept as a version) stays past --tombstone-grace; a plain
    delete and a version removed for good are forgotten."""
    db = MetadataDB(tmp_path / "m.sqlite", "never")
    v1, v2 = "0000000000001.000000.n", "0000000000002.000000.n"
    marker = ManifestEntry.tombstone("b/marked", v1, 1.0, ((KEEP, "1"),))
    kept_marker = ManifestEntry.tombstone(version_key("b/other", v1), v1, 1.0, ((KEEP, "1"),))
    plain = ManifestEntry.tombstone("plain", v1, 1.0)
    removed = ManifestEntry.tombstone(version_key("b/other", v2), v2, 1.0)
    db.apply([marker, kept_marker, plain, removed])
    assert {t.key for t in db.tombstones_before(float("inf"))} == {"plain", removed.key}
