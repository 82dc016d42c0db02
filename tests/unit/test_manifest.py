"""Properties of the manifest core: LWW merge is a CRDT join, digests are order-free, and one
ManifestSync exchange converges two replicas while shipping only the buckets that differ."""

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
from p2pstore.core.manifest import (
    DONE,
    NBUCKETS,
    NSUBS,
    BucketDigest,
    ManifestEntry,
    ManifestSync,
    MemoryManifest,
    bucket_of,
    differing_buckets,
    entry_hash,
    merge,
    newer,
    run_exchange,
    slot_of,
    sub_digest,
)

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


# --- digests are order-independent ---------------------------------------------------------


@FAST
@given(st.lists(any_entries, max_size=30), st.randoms(use_true_random=False))
def test_apply_order_does_not_matter(entries: list[ManifestEntry], rnd: Any) -> None:
    a, b = MemoryManifest(nbuckets=8), MemoryManifest(nbuckets=8)
    for e in entries:
        a.apply(e)
    shuffled = list(entries) * 2  # duplicates are harmless too
    rnd.shuffle(shuffled)
    for e in shuffled:
        b.apply(e)
    assert a.snapshot() == b.snapshot()
    assert a.digest().digest() == b.digest().digest()
    assert a.digest().root() == b.digest().root()
    # the incrementally maintained digest equals one built from scratch
    fresh = BucketDigest(8)
    for e in a:
        fresh.add(e)
    assert fresh.digest() == a.digest().digest()


def test_bucket_digest_add_remove_replace() -> None:
    d = BucketDigest(4)
    empty = d.digest()
    e1 = _live("k", make_version(1, 0, "n"), b"x", "", 1.0)
    e2 = _live("k", make_version(2, 0, "n"), b"y", "", 1.0)
    d.add(e1)
    assert differing_buckets(empty, d.digest()) == [bucket_of("k", 4)]
    d.replace(e1, e2)
    after = d.digest()
    d.remove(e2)
    assert d.digest() == empty
    assert after != empty
    assert len(entry_hash(e1)) == 16 and entry_hash(e1) != entry_hash(e2)
    with pytest.raises(ValueError):
        differing_buckets(empty, empty[:-1])


def test_bucket_of_is_stable_and_in_range() -> None:
    # pinned values: must never change between releases or nodes would disagree on digests
    assert [bucket_of(k) for k in ("a", "dir/c")] == [575, 118]
    tomb = ManifestEntry.tombstone("a", "0000000000001.000000.n", 1.0)
    assert entry_hash(tomb).hex() == "b139674c76e6d015c4db634376e31814"
    assert all(0 <= bucket_of(k, 7) < 7 for k in KEYS)
    counts = [0] * 16
    for i in range(4000):
        counts[bucket_of(f"file-{i}", 16)] += 1
    assert min(counts) > 150 and max(counts) < 350


# --- the sync exchange ---------------------------------------------------------------------


def _replicas(
    common: list[ManifestEntry], only_a: list[ManifestEntry], only_b: list[ManifestEntry], n: int
) -> tuple[MemoryManifest, MemoryManifest]:
    a, b = MemoryManifest(n), MemoryManifest(n)
    for e in common:
        a.apply(e)
        b.apply(e)
    for e in only_a:
        a.apply(e)
    for e in only_b:
        b.apply(e)
    return a, b


MAX_MESSAGES_ONE_BATCH = 6
"""digest -> subdigest -> entries -> push (full opening), or root -> digest -> subdigest ->
entries -> push -> done (three round trips)."""


@FAST
@given(
    st.lists(any_entries, max_size=15),
    st.lists(any_entries, max_size=15),
    st.lists(any_entries, max_size=15),
    st.booleans(),
    st.sampled_from([4, 64, NBUCKETS]),
)
def test_one_exchange_converges(
    common: list[ManifestEntry],
    only_a: list[ManifestEntry],
    only_b: list[ManifestEntry],
    full: bool,
    nbuckets: int,
) -> None:
    a, b = _replicas(common, only_a, only_b, nbuckets)
    expected: dict[str, ManifestEntry] = {}
    for e in common + only_a + only_b:
        expected[e.key] = merge(expected.get(e.key), e)  # type: ignore[assignment]
    sync = ManifestSync(nbuckets)
    stats = run_exchange(sync, a, b, a.apply, b.apply, full=full, transport=msgpack_roundtrip)
    assert a.snapshot() == b.snapshot() == expected
    assert a.digest().root() == b.digest().root()
    assert stats.messages <= MAX_MESSAGES_ONE_BATCH
    # a second exchange finds nothing to do: the root check answers at once
    again = run_exchange(sync, a, b, a.apply, b.apply)
    assert again.messages == 2 and again.entries_sent == 0


@FAST
@given(
    st.lists(any_entries, max_size=20),
    st.lists(any_entries, max_size=20),
    st.booleans(),
    st.integers(1, 5),
)
def test_batched_exchange_converges(
    only_a: list[ManifestEntry], only_b: list[ManifestEntry], full: bool, max_entries: int
) -> None:
    """With a tiny max_entries the differing buckets go in several batches, still one exchange."""
    a, b = _replicas([], only_a, only_b, 16)
    sync = ManifestSync(16, max_entries=max_entries)
    run_exchange(sync, a, b, a.apply, b.apply, full=full, transport=msgpack_roundtrip)
    assert a.snapshot() == b.snapshot()
    assert a.digest().root() == b.digest().root()


@FAST
@given(st.integers(0, 12), st.booleans(), st.data())
def test_exchange_ships_only_differing_buckets(k: int, full: bool, data: st.DataObject) -> None:
    base = [_live(f"file/{i}", make_version(1, 0, "n1"), b"hello", "", 1.0) for i in range(120)]
    changed = data.draw(st.lists(st.integers(0, 119), min_size=k, max_size=k, unique=True))
    only_a, only_b = [], []
    for i in changed:
        e = base[i]
        side = data.draw(st.sampled_from(["a", "b", "del"]))
        if side == "del":
            only_b.append(ManifestEntry.tombstone(e.key, make_version(2, 0, "n2"), 2.0))
        else:
            new = _live(e.key, make_version(2, 0, "n" + side), b"world", "", 2.0)
            (only_a if side == "a" else only_b).append(new)
    a, b = _replicas(base, only_a, only_b, NBUCKETS)
    stats = run_exchange(ManifestSync(), a, b, a.apply, b.apply, full=full)
    assert len(stats.buckets_with_entries) <= k
    # only changed keys are re-sent in both directions: their k entries each way at most,
    # plus unchanged neighbours sharing a bucket (whole buckets are sent one way)
    assert stats.applied_a + stats.applied_b == k
    assert a.snapshot() == b.snapshot()
    if k == 0:
        assert stats.messages == 2 and stats.entries_sent == 0


def test_exchange_message_shapes() -> None:
    a, b = MemoryManifest(8), MemoryManifest(8)
    e = _live("k", make_version(1, 0, "n1"), b"x", "text/plain", 1.0)
    a.apply(e)
    bucket, sub = slot_of("k", 8)
    sync = ManifestSync(8)
    m1 = sync.open(b, full=True)
    assert m1["type"] == "manifest-digest" and len(m1["buckets"]) == 8 and len(m1["root"]) == 16
    step = sync.handle(a, msgpack_roundtrip(m1))
    assert step.apply == []
    assert step.reply == {
        "type": "manifest-subdigest",
        "buckets": [bucket],
        "pending": [],
        "subs": [sub_digest([e], 8)],
    }
    step = sync.handle(b, msgpack_roundtrip(step.reply))  # b has nothing: only k's sub-bucket differs
    assert step.reply == {"type": "manifest-entries", "buckets": [bucket], "pending": [], "entries": [],
                          "subs": [[sub]]}  # fmt: skip
    step = sync.handle(a, msgpack_roundtrip(step.reply))
    assert step.reply == {"type": "manifest-push", "buckets": [bucket], "pending": [],
                          "entries": [e.to_wire()], "subs": [[sub]]}  # fmt: skip
    done = sync.handle(b, msgpack_roundtrip(step.reply))
    assert done.reply is None and done.apply == [e]
    b.apply(e)
    assert sync.handle(a, sync.open(b)).reply == DONE


def test_second_level_ships_sub_buckets_not_whole_buckets() -> None:
    """2,000 files in 16 buckets (125 a bucket, ~8 a sub-bucket): 5 changed keys cost their
    sub-buckets, not their buckets."""
    base = [_live(f"file/{i}", make_version(1, 0, "n1"), b"hello", "", 1.0) for i in range(2000)]
    changed = (3, 400, 999, 1500, 1999)
    newer_on_a = [_live(f"file/{i}", make_version(2, 0, "na"), b"world", "", 2.0) for i in changed]
    a, b = _replicas(base, newer_on_a, [], 16)
    stats = run_exchange(ManifestSync(16), a, b, a.apply, b.apply, transport=msgpack_roundtrip)
    assert a.snapshot() == b.snapshot()
    assert stats.applied_b == 5 and stats.applied_a == 0
    assert stats.entries_sent <= 5 * 20  # whole buckets would be up to 5 * 125 = 625
    assert stats.messages <= MAX_MESSAGES_ONE_BATCH


def test_sub_digest_xors_to_the_bucket_hash() -> None:
    d = BucketDigest(4)
    es = [_live(f"k{i}", make_version(1, 0, "n"), b"x", "", 1.0) for i in range(50)]
    for e in es:
        d.add(e)
    for bucket in range(4):
        subs = sub_digest([e for e in es if bucket_of(e.key, 4) == bucket], 4)
        acc = 0
        for h in subs:
            acc ^= int.from_bytes(h, "big")
        assert acc.to_bytes(16, "big") == d.digest()[bucket]


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


def _message_junk() -> st.SearchStrategy[Any]:
    good = ManifestSync(8)
    store = MemoryManifest(8)
    store.apply(VALID)
    samples = [
        good.open(store),
        good.open(store, full=True),
        {
            "type": "manifest-entries",
            "buckets": [bucket_of(VALID.key, 8)],
            "pending": [],
            "entries": [VALID.to_wire()],
        },
        {"type": "manifest-push", "buckets": [0], "pending": [1], "entries": []},
        {"type": "manifest-subdigest", "buckets": [0], "pending": [1], "subs": [[b"\0" * 16] * NSUBS]},
        {
            "type": "manifest-entries",
            "buckets": [bucket_of(VALID.key, 8)],
            "pending": [],
            "entries": [VALID.to_wire()],
            "subs": [[slot_of(VALID.key, 8)[1]]],
        },
    ]
    mutated = st.tuples(st.sampled_from(samples), st.text(max_size=10), junk_values).map(
        lambda t: {**t[0], **{(t[1] if t[1] not in ("",) else "type"): t[2]}}
    )
    field_mutated = st.tuples(
        st.sampled_from(samples),
        st.sampled_from(["type", "root", "buckets", "pending", "entries", "nbuckets", "subs"]),
        junk_values,
    ).map(lambda t: {**t[0], t[1]: t[2]})
    return junk_values | mutated | field_mutated


@settings(max_examples=150, deadline=None)
@given(_message_junk())
def test_sync_handle_junk_only_value_error(msg: Any) -> None:
    sync = ManifestSync(8)
    store = MemoryManifest(8)
    store.apply(VALID)
    try:
        step = sync.handle(store, msg)
    except ValueError:
        return
    for e in step.apply:
        assert e.validate() is e


def test_sync_rejects_entries_outside_buckets_and_nbuckets_mismatch() -> None:
    sync = ManifestSync(8)
    store = MemoryManifest(8)
    other = (bucket_of(VALID.key, 8) + 1) % 8
    msg = {"type": "manifest-entries", "buckets": [other], "pending": [], "entries": [VALID.to_wire()]}
    with pytest.raises(ValueError, match="outside"):
        sync.handle(store, msg)
    with pytest.raises(ValueError, match="nbuckets"):
        sync.handle(store, ManifestSync(16).open(store))
    with pytest.raises(ValueError, match="unknown"):
        sync.handle(store, {"type": "manifest-bogus"})


def test_permutations_of_three_conflicting_writes() -> None:
    v = make_version(5, 0, "n1")
    es = [
        _live("k", v, b"x", "", 1.0),
        _live("k", v, b"y", "", 1.0),
        ManifestEntry.tombstone("k", v, 1.0),
    ]
    results = set()
    for perm in itertools.permutations(es):
        m = MemoryManifest(4)
        for e in perm:
            m.apply(e)
        results.add((m.get("k"), m.digest().root()))
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
