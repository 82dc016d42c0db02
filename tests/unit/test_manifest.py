"""Properties of the manifest core: LWW merge is a CRDT join, the merged state and its Merkle
tree do not depend on the order entries arrive in, pinned hashes, and junk on the wire is refused
(the Merkle exchange itself: tests/unit/test_merkle.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry, entry_hash, merge, newer
from p2pstore.core.merkle import MemoryMerkleManifest, MerkleTree, leaf_of

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["a", "b", "dir/c", "dir/d", "é/ü", "x" * 40, "k1", "k2", "k3", "k4", "k5", "k6"]
NODES = ["n1", "n2", "n3"]
CONTENTS = [b"", b"hello", b"world" * 100, b"\x00" * 7]


def _live(key: str, version: str, content: bytes, ctype: str, modified: float) -> ManifestEntry:
    chunks = (hashlib.sha256(content).hexdigest(),) if content else ()
    sha = hashlib.sha256(content).hexdigest()
    return ManifestEntry(key, version, len(content), sha, chunks, ctype, False, modified)


# Tiny version space on purpose: many same-version conflicts between different contents.
versions = st.builds(make_version, st.integers(1, 4), st.integers(0, 1), st.sampled_from(NODES))


def entries_for(keys: st.SearchStrategy[str]) -> st.SearchStrategy[ManifestEntry]:
    live = st.builds(
        _live,
        keys,
        versions,
        st.sampled_from(CONTENTS),
        st.sampled_from(["", "text/plain"]),
        st.sampled_from([1.0, 2.5]),
    )
    dead = st.builds(ManifestEntry.tombstone, keys, versions, st.sampled_from([1.0, 3.0]))
    return st.one_of(live, dead)


one_key_entries = entries_for(st.just("same/key"))
any_entries = entries_for(st.sampled_from(KEYS))


def msgpack_roundtrip(m: dict[str, Any]) -> dict[str, Any]:
    """The real wire: what a peer sees after msgpack encode/decode."""
    return msgpack.unpackb(msgpack.packb(m, use_bin_type=True), raw=False)


# --- merge is a join -----------------------------------------------------------------------


@FAST
@given(one_key_entries, one_key_entries)
def test_merge_commutative(a: ManifestEntry, b: ManifestEntry) -> None:
    assert merge(a, b) == merge(b, a)


@FAST
@given(one_key_entries, one_key_entries, one_key_entries)
def test_merge_associative(a: ManifestEntry, b: ManifestEntry, c: ManifestEntry) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@FAST
@given(one_key_entries, one_key_entries)
def test_merge_idempotent_and_absorbing(a: ManifestEntry, b: ManifestEntry) -> None:
    assert merge(a, a) == a
    assert merge(a, None) == a == merge(None, a)
    m = merge(a, b)
    assert merge(m, a) == m == merge(m, b)
    assert m in (a, b)


def test_newer_follows_version_and_breaks_ties_deterministically() -> None:
    old = _live("k", make_version(1, 0, "n1"), b"x", "", 1.0)
    new = _live("k", make_version(2, 0, "n1"), b"y", "", 1.0)
    assert newer(None, old) and newer(old, new) and not newer(new, old)
    assert not newer(old, old)
    tomb = ManifestEntry.tombstone("k", old.version, 1.0)
    # same version, different content: exactly one direction wins
    assert newer(old, tomb) != newer(tomb, old)
    assert merge(tomb, new) == new  # a later write resurrects, an older one does not
    assert merge(ManifestEntry.tombstone("k", new.version, 1.0), old).deleted


def test_merge_refuses_different_keys() -> None:
    with pytest.raises(ValueError):
        merge(
            _live("a", make_version(1, 0, "n"), b"", "", 1.0),
            _live("b", make_version(1, 0, "n"), b"", "", 1.0),
        )


# --- the merged state and its tree are order-independent ----------------------------------


@FAST
@given(st.lists(any_entries, max_size=30), st.randoms(use_true_random=False))
def test_apply_order_does_not_matter(entries: list[ManifestEntry], rnd: Any) -> None:
    a, b = MemoryMerkleManifest(), MemoryMerkleManifest()
    for e in entries:
        a.apply(e)
    shuffled = list(entries) * 2  # duplicates are harmless too
    rnd.shuffle(shuffled)
    for e in shuffled:
        b.apply(e)
    assert all(a.get(k) == b.get(k) for k in KEYS)
    assert a.merkle() == b.merkle()
    # the incrementally maintained tree equals one built from scratch
    held = [e for e in (a.get(k) for k in KEYS) if e is not None]
    assert MerkleTree.build((leaf_of(e.key), entry_hash(e)) for e in held) == a.merkle()


def test_tree_add_remove_replace() -> None:
    tree = MerkleTree()
    empty = tree.root()
    e1 = _live("k", make_version(1, 0, "n"), b"x", "", 1.0)
    e2 = _live("k", make_version(2, 0, "n"), b"y", "", 1.0)
    tree.add(e1)
    assert tree.root() != empty and tree.node(tree.depth, leaf_of("k")) == entry_hash(e1)
    tree.replace(e1, e2)
    assert tree.node(tree.depth, leaf_of("k")) == entry_hash(e2)
    tree.remove(e2)
    assert tree.root() == empty and tree.entries == 0
    assert len(entry_hash(e1)) == 16 and entry_hash(e1) != entry_hash(e2)


def test_leaf_of_and_entry_hash_are_pinned() -> None:
    # pinned values: must never change between releases, or nodes would disagree on leaves
    # (and the leaf stored with every row in the metadata database would be wrong)
    assert [leaf_of(k) for k in ("a", "dir/c")] == [36816, 7562]
    tomb = ManifestEntry.tombstone("a", "0000000000001.000000.n", 1.0)
    assert entry_hash(tomb).hex() == "b139674c76e6d015c4db634376e31814"
    counts = [0] * 16
    for i in range(4000):
        counts[leaf_of(f"file-{i}") >> 12] += 1  # the root's 16 children
    assert min(counts) > 150 and max(counts) < 350


# --- junk is refused with ValueError and nothing else --------------------------------------

VALID = _live("dir/file.txt", make_version(1700000000000, 3, "node-a"), b"abc", "text/plain", 5.0)

junk_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def test_wire_roundtrip() -> None:
    for e in (VALID, ManifestEntry.tombstone("a/b", make_version(1, 0, "n"), 1.0)):
        assert ManifestEntry.from_wire(e.to_wire()) == e
        assert ManifestEntry.from_wire(msgpack_roundtrip(e.to_wire())) == e


@settings(max_examples=150, deadline=None)
@given(junk_values)
def test_from_wire_junk_only_value_error(obj: Any) -> None:
    try:
        e = ManifestEntry.from_wire(obj)
    except ValueError:
        return
    assert e.validate() is e


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(VALID.to_wire())), junk_values)
def test_from_wire_mutated_field(field: str, value: Any) -> None:
    wire = VALID.to_wire()
    wire[field] = value
    try:
        e = ManifestEntry.from_wire(wire)
    except ValueError:
        return
    assert e.validate() is e


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", ""),
        ("key", "é" * 513),  # 1026 bytes
        ("key", "a\x00b"),
        ("key", "\ud800"),
        ("key", 5),
        ("version", "+000000000001.000000.n"),
        ("version", "0000000000001.000000"),
        ("version", "000000000001_.000000.n"),
        ("version", b"0000000000001.000000.n"),
        ("size", True),
        ("size", -1),
        ("size", 2**64),
        ("size", 1.0),
        ("sha256", "A" * 64),
        ("sha256", "a" * 63),
        ("sha256", ""),
        ("chunks", "ab"),
        ("chunks", ["z" * 64]),
        ("chunks", []),
        ("content_type", "text/plain\r\nX-Evil: 1"),
        ("content_type", "t" * 300),
        ("deleted", 1),
        ("modified", math.nan),
        ("modified", math.inf),
        ("modified", "yesterday"),
        ("modified", 10**400),
    ],
)
def test_from_wire_rejects(field: str, value: Any) -> None:
    wire = VALID.to_wire()
    wire[field] = value
    with pytest.raises(ValueError):
        ManifestEntry.from_wire(wire)


def test_from_wire_rejects_inconsistent_tombstone_and_missing_fields() -> None:
    wire = VALID.to_wire()
    wire["deleted"] = True
    with pytest.raises(ValueError, match="tombstone"):
        ManifestEntry.from_wire(wire)
    del wire["sha256"]
    with pytest.raises(ValueError, match="lacks"):
        ManifestEntry.from_wire(wire)
    assert ManifestEntry.from_wire({**VALID.to_wire(), "future": 1}) == VALID
    assert ManifestEntry.from_wire({**VALID.to_wire(), "modified": 5}) == VALID


def test_permutations_of_three_conflicting_writes() -> None:
    v = make_version(5, 0, "n1")
    es = [
        _live("k", v, b"x", "", 1.0),
        _live("k", v, b"y", "", 1.0),
        ManifestEntry.tombstone("k", v, 1.0),
    ]
    results = set()
    for perm in itertools.permutations(es):
        m = MemoryMerkleManifest()
        for e in perm:
            m.apply(e)
        results.add((m.get("k"), m.merkle().root()))
    assert len(results) == 1


def test_metadata_travels_with_the_entry_and_counts_in_its_hash() -> None:
    """Object metadata (S3's ETag, user metadata) is part of the entry: on the wire, in its
    hash (so anti-entropy converges two copies that differ only there); an entry without
    metadata keeps the hash and wire form it always had."""
    with_meta = dataclasses.replace(VALID, meta=(("content-disposition", "inline"), ("md5", "0" * 32)))
    wire = with_meta.to_wire()
    assert wire["meta"] == {"content-disposition": "inline", "md5": "0" * 32}
    assert ManifestEntry.from_wire(msgpack_roundtrip(wire)) == with_meta
    assert "meta" not in VALID.to_wire()
    assert entry_hash(with_meta) != entry_hash(VALID)
    unsorted = {**wire, "meta": {"md5": "0" * 32, "content-disposition": "inline"}}
    assert ManifestEntry.from_wire(unsorted) == with_meta  # however the map was ordered


@pytest.mark.parametrize(
    "meta",
    [
        "not a map",
        {"a": 1},
        {5: "x"},
        {"": "empty name"},
        {"a\nb": "x"},
        {"a": "line\r\nX-Evil: 1"},
        {f"k{i}": "v" for i in range(65)},
        {"big": "x" * 9000},
    ],
)
def test_malformed_metadata_is_refused(meta: Any) -> None:
    wire = {**VALID.to_wire(), "meta": meta}
    with pytest.raises(ValueError):
        ManifestEntry.from_wire(wire)


def test_a_tombstone_carries_no_metadata() -> None:
    wire = {**ManifestEntry.tombstone("a", make_version(1, 0, "n"), 1.0).to_wire(), "meta": {"md5": "x"}}
    with pytest.raises(ValueError, match="tombstone"):
        ManifestEntry.from_wire(wire)
