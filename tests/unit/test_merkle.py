"""The Merkle anti-entropy core: exchanges cost the difference (bytes counted on the wire, as
msgpack), identical manifests cost one root comparison, and any two manifests converge."""

from __future__ import annotations

import hashlib
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry, entry_hash, merge
from p2pstore.core.merkle import (
    DONE,
    LEAVES,
    SUMMARY_PER_ENTRY,
    WIRE_HASH,
    MemoryMerkleManifest,
    MerkleSync,
    MerkleTree,
    leaf_of,
    pack_nodes,
    run_merkle_exchange,
    unpack_nodes,
    xor_fold,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(m: dict) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def decode(b: bytes) -> dict:
    return msgpack.unpackb(b, raw=False)


def entry(key: str, n: int = 0, deleted: bool = False) -> ManifestEntry:
    version = make_version(1_700_000_000_000 + n, 0, "node-a")
    if deleted:
        return ManifestEntry.tombstone(key, version, 1.7e9)
    sha = hashlib.sha256(f"{key}:{n}".encode()).hexdigest()
    return ManifestEntry(key, version, 100 + n, sha, (sha,), "application/octet-stream", False, 1.7e9 + n)


def applier(m: MemoryMerkleManifest):
    return lambda entries: sum(m.apply(e) for e in entries)


def pair(n: int, differ: int) -> tuple[MemoryMerkleManifest, MemoryMerkleManifest]:
    """Two manifests of n common keys; b additionally holds ``differ`` keys a lacks or has older."""
    a, b = MemoryMerkleManifest(), MemoryMerkleManifest()
    for i in range(n):
        e = entry(f"common/{i:08d}")
        a.apply(e)
        b.apply(e)
    for i in range(differ):
        if i % 2:
            b.apply(entry(f"new/{i:06d}", 5))
        else:
            b.apply(entry(f"common/{i * 7919 % n:08d}", 9))  # a newer version of a common key
    return a, b


def exchange(a, b, **kw):
    return run_merkle_exchange(MerkleSync(**kw), a, b, applier(a), applier(b), encode, decode)


def test_leaves_are_in_range_and_spread() -> None:
    leaves = [leaf_of(f"k/{i}") for i in range(2000)]
    assert all(0 <= leaf < LEAVES for leaf in leaves)
    assert len(set(leaves)) > 1900  # 2,000 keys in 65,536 leaves: few share one


@FAST
@given(st.sets(st.integers(0, LEAVES - 1)))
def test_node_lists_round_trip(nodes) -> None:
    ordered = sorted(nodes)
    assert unpack_nodes(pack_nodes(ordered), LEAVES) == ordered
    if len(ordered) > 1:
        with pytest.raises(ValueError):
            pack_nodes(ordered[::-1])


def test_a_whole_range_packs_in_a_few_bytes() -> None:
    assert len(pack_nodes(range(LEAVES))) <= 4


def test_identical_manifests_cost_one_root_comparison() -> None:
    a, b = pair(20_000, 0)
    stats = exchange(a, b)
    assert stats.messages == 2  # the root, and "done"
    assert stats.bytes < 100
    assert stats.entries_sent == 0


def test_bytes_grow_with_the_difference_not_the_manifest() -> None:
    """k differing keys cost O(k log n) bytes: within a constant of k * log16(n) short hashes
    and k entries, whatever n is; and far below shipping the manifest."""
    per_key = {}
    for n, k in ((20_000, 10), (20_000, 40), (80_000, 10), (80_000, 40)):
        a, b = pair(n, k)
        stats = exchange(a, b)
        assert a.merkle() == b.merkle()
        # only differing entries travel (a key held in two versions may cross both ways)
        assert k <= stats.entries_sent <= 2 * k
        per_key[(n, k)] = stats.bytes / (k * math.log(n, 16))
        assert stats.bytes < n * 2  # the manifest itself is ~200 bytes per entry
    bound = max(per_key.values())
    assert bound < 700, per_key  # bytes per differing key per tree level stay bounded
    # four times the manifest costs about the same per differing key (O(log n), not O(n))
    assert per_key[(80_000, 40)] < 2 * per_key[(20_000, 40)], per_key


def test_one_difference_walks_the_tree_down_and_back() -> None:
    """The message sequence for one key b lacks: the root, one level message per tree level
    (one differing node each), the leaf summary, the entry, an empty push, and nothing else."""
    a, b = pair(500, 0)
    e = entry("only/a", 3)
    a.apply(e)
    sync = MerkleSync()
    msg = decode(encode(sync.open(b)))
    assert msg["type"] == "merkle-root" and len(msg["root"]) == 16
    leaf = leaf_of(e.key)
    for level in range(sync.depth):
        step = sync.handle(a if level % 2 == 0 else b, msg)
        assert step.apply == [] and step.reply["type"] == "merkle-level"
        assert step.reply["level"] == level
        assert unpack_nodes(step.reply["nodes"], LEAVES) == [leaf // 16 ** (sync.depth - level)]
        assert len(step.reply["hashes"]) == 16 * WIRE_HASH
        msg = decode(encode(step.reply))
    step = sync.handle(a, msg)  # the leaves: a, whose turn it is, summarises the leaf
    assert step.reply["type"] == "merkle-leaves"
    assert unpack_nodes(step.reply["leaves"], LEAVES) == [leaf] and step.reply["pending"] == b""
    step = sync.handle(b, decode(encode(step.reply)))  # b lacks the key: wants its id
    assert step.reply["type"] == "merkle-entries" and step.reply["entries"] == []
    assert len(step.reply["want"]) == WIRE_HASH
    step = sync.handle(a, decode(encode(step.reply)))
    assert step.reply["type"] == "merkle-push" and step.reply["entries"] == [e.to_wire()]
    last = sync.handle(b, decode(encode(step.reply)))
    assert last.reply is None and last.apply == [e]
    b.apply(e)
    assert sync.handle(a, sync.open(b)).reply == DONE


@pytest.mark.parametrize("max_entries", [1, 7, 200])
def test_every_message_stays_within_its_bounds(max_entries: int) -> None:
    """However much differs, an entries message carries at most max_entries entries and a leaf
    summary at most SUMMARY_PER_ENTRY x as many pairs (leaves beyond wait for a later batch; a
    single leaf always goes whole); a push answers one summary, so it is bounded by it."""
    a, b = pair(1500, 300)
    seen: list[dict] = []

    def recording(m: dict) -> bytes:
        seen.append(m)
        return encode(m)

    sync = MerkleSync(max_entries=max_entries)
    run_merkle_exchange(sync, a, b, applier(a), applier(b), recording, decode)
    assert a.merkle() == b.merkle()
    leaf_cap = max(len(a.hashes_in_leaf(leaf)) for leaf in range(LEAVES))
    summary_cap = max(max_entries * SUMMARY_PER_ENTRY, leaf_cap)
    for m in seen:
        if m["type"] == "merkle-entries":
            assert len(m["entries"]) <= max(max_entries, leaf_cap)
        if m["type"] == "merkle-push":
            assert len(m["entries"]) <= summary_cap
        if m["type"] == "merkle-leaves":
            assert sum(len(blob) for blob in m["keys"]) // (2 * WIRE_HASH) <= summary_cap
    if max_entries == 1:
        assert sum(m["type"] == "merkle-push" for m in seen) > 10  # many small batches


def test_an_empty_node_catches_up_in_batches() -> None:
    a, b = pair(3000, 0)
    empty = MemoryMerkleManifest()
    stats = exchange(empty, a, max_entries=500)
    assert empty.merkle() == a.merkle() and len(empty) == 3000
    assert stats.messages > 6  # several batches, none over the limit
    stats = exchange(b, MemoryMerkleManifest(), max_entries=500)  # and the other way round
    assert stats.applied_b == 3000


def run_streams(
    sync: MerkleSync, a: MemoryMerkleManifest, b: MemoryMerkleManifest, ways: int
) -> list[set[int]]:
    """An exchange a opens, whose first reply with pending leaves a splits ``ways`` ways; each
    stream then runs to its end on its own (as the node runs them at once). Returns the leaves
    each stream's messages named."""
    named: list[set[int]] = []

    def run(msg: dict | None, fork: bool) -> None:
        seen: set[int] = set()
        named.append(seen)
        while msg is not None and msg["type"] != "merkle-done":
            for m in (msg, step_b := sync.handle(b, decode(encode(msg)))):
                if isinstance(m, dict) and "leaves" in m:
                    seen.update(unpack_nodes(m["leaves"], LEAVES))
            for e in step_b.apply:
                b.apply(e)
            step_a = sync.handle(a, decode(encode(step_b.reply or dict(DONE))))
            for e in step_a.apply:
                a.apply(e)
            msg = step_a.reply
            if fork and msg is not None and msg.get("pending"):
                fork = False
                msg, *more = sync.split(a, msg, ways)
                for m in more:
                    run(m, False)

    run(sync.open(a), True)
    return named


def test_split_streams_cover_disjoint_leaves_and_converge() -> None:
    a, b = pair(2000, 6000)  # b holds 3,000 keys a lacks and 3,000 newer versions
    a.apply(entry("only-a/1"))
    named = run_streams(MerkleSync(max_entries=300), a, b, 3)
    assert a.merkle() == b.merkle()
    assert len(named) == 3 and all(named)  # split three ways, every stream did work
    assert not (named[1] & named[2])  # the streams split off share no leaf
    assert b.get("only-a/1") == a.get("only-a/1")


def test_a_reply_with_few_pending_leaves_is_not_split() -> None:
    a, _ = pair(200, 10)
    sync = MerkleSync()
    msg = {"type": "merkle-push", "leaves": pack_nodes([1]), "pending": pack_nodes([2, 3]), "entries": []}
    assert sync.split(a, msg, 2) == [msg]
    assert sync.split(a, {"type": "merkle-level", "level": 0}, 2) == [{"type": "merkle-level", "level": 0}]


keys = st.text(alphabet="abcxyz", min_size=1, max_size=6).map(lambda s: f"k/{s}")
ops = st.lists(st.tuples(keys, st.integers(0, 5), st.booleans()), max_size=30)


@FAST
@given(ops, ops, ops)
def test_any_two_manifests_converge(common, only_a, only_b) -> None:
    a, b = MemoryMerkleManifest(), MemoryMerkleManifest()
    expected: dict[str, ManifestEntry] = {}
    for side, items in ((a, common), (a, only_a), (b, only_b)):
        for key, n, deleted in items:
            e = entry(key, n, deleted)
            side.apply(e)
            if side is a and items is common:
                b.apply(e)
            expected[key] = merge(expected.get(key), e)
    exchange(a, b, max_entries=3)
    for key, e in expected.items():
        assert a.get(key) == b.get(key) == e
    assert a.merkle() == b.merkle()
    assert exchange(a, b).messages == 2


def test_tree_built_from_hashes_equals_incremental() -> None:
    m = MemoryMerkleManifest()
    entries = [entry(f"x/{i}", i % 3, i % 5 == 0) for i in range(500)]
    for e in entries:
        m.apply(e)
    m.apply(entry("x/1", 99))
    built = MerkleTree.build((leaf_of(k), entry_hash(m.get(k))) for k in {e.key for e in entries})
    assert built == m.merkle()


@given(st.lists(st.binary(min_size=16, max_size=16), max_size=40))
@FAST
def test_xor_fold_equals_xor_hash_by_hash(hashes: list[bytes]) -> None:
    acc = 0
    for h in hashes:
        acc ^= int.from_bytes(h, "big")
    assert xor_fold(b"".join(hashes), len(hashes)) == acc


def test_tree_from_leaf_blobs_equals_one_built_entry_by_entry() -> None:
    pairs = [(leaf_of(f"k/{i}"), hashlib.blake2b(b"%d" % i, digest_size=16).digest()) for i in range(3000)]
    grouped: dict[int, list[bytes]] = {}
    for leaf, h in pairs:
        grouped.setdefault(leaf, []).append(h)
    rows = [(leaf, len(hs), b"".join(hs)) for leaf, hs in grouped.items()]
    assert MerkleTree.from_leaf_blobs(rows) == MerkleTree.build(pairs)
    with pytest.raises(ValueError):
        xor_fold(b"\0" * 17, 1)  # a hash of another length is refused, not folded wrongly


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "merkle-root", "shape": [16, 3], "root": b"x" * 16},
        {"type": "merkle-root", "shape": [16, 4], "root": b"x"},
        {"type": "merkle-level", "level": 9, "nodes": b"", "hashes": b""},
        {"type": "merkle-level", "level": 1, "nodes": pack_nodes([16]), "hashes": b"\0" * 128},
        {"type": "merkle-level", "level": 0, "nodes": pack_nodes([0]), "hashes": b"\0" * 3},
        {"type": "merkle-leaves", "leaves": b"\x80", "pending": b"", "keys": [b""]},
        {"type": "merkle-leaves", "leaves": b"\x01", "pending": b"", "keys": [b""]},
        {"type": "merkle-leaves", "leaves": b"\x00\xff\xff\x7f", "pending": b"", "keys": [b""]},
        {"type": "merkle-leaves", "leaves": pack_nodes([1]), "pending": pack_nodes([1]), "keys": [b""]},
        {"type": "merkle-leaves", "leaves": pack_nodes([LEAVES]), "pending": b"", "keys": [b""]},
        {"type": "merkle-leaves", "leaves": pack_nodes([1]), "pending": b"", "keys": [b"abc"]},
        {"type": "merkle-entries", "leaves": pack_nodes([1]), "pending": b"", "entries": [], "want": b"x"},
        {"type": "merkle-push", "leaves": pack_nodes([1]), "pending": b"", "entries": [{"key": 1}]},
        {"type": "merkle-push", "leaves": b"", "pending": b"", "entries": [entry("k").to_wire()]},
        {"type": "nonsense"},
        {"type": "manifest-digest", "nbuckets": 1024, "root": b"x" * 16},  # the former exchange
        ["not", "a", "map"],
    ],
)
def test_malformed_messages_are_refused(msg) -> None:
    with pytest.raises(ValueError):
        MerkleSync().handle(MemoryMerkleManifest(), msg)


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _valid_messages() -> list[dict]:
    """One real message of each kind, from an exchange between two small manifests."""
    a, b = pair(40, 6)
    out: list[dict] = []

    def recording(m: dict) -> bytes:
        out.append(decode(encode(m)))
        return encode(m)

    run_merkle_exchange(MerkleSync(max_entries=2), a, b, applier(a), applier(b), recording, decode)
    return out


VALID_MESSAGES = _valid_messages()
assert {m["type"] for m in VALID_MESSAGES} == MerkleSync.TYPES
FIELDS = ["type", "shape", "root", "level", "nodes", "hashes", "leaves", "pending", "keys", "entries"]
FIELDS += ["want", "small"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_MESSAGES), st.sampled_from(FIELDS), junk | st.just(None))
def test_junk_in_any_field_is_refused_with_value_error_only(msg, name, value) -> None:
    """A real message with one field replaced or dropped: either refused with ValueError, or
    handled, and then everything it would apply is a well-formed entry."""
    mutated = dict(msg)
    if value is None:
        mutated.pop(name, None)
    else:
        mutated[name] = value
    store, _ = pair(40, 0)
    try:
        step = MerkleSync(max_entries=2).handle(store, mutated)
    except ValueError:
        return
    for e in step.apply:
        assert e.validate() is e


@FAST
@given(junk)
def test_junk_messages_are_refused_with_value_error_only(msg) -> None:
    with pytest.raises(ValueError):
        MerkleSync().handle(MemoryMerkleManifest(), msg)


class BodyStore(MemoryMerkleManifest):
    """A store that keeps small files' bodies, as LocalStore does in SQLite."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[str, bytes] = {}

    def small_data(self, sha: str) -> bytes | None:
        return self.bodies.get(sha)


def small_file(key: str, body: bytes) -> ManifestEntry:
    sha = hashlib.sha256(body).hexdigest()
    return ManifestEntry(
        key, make_version(1_700_000_000_001, 0, "n"), len(body), sha, (sha,), "", False, 1.7e9
    )


def test_small_bodies_travel_with_their_entries_and_are_checked() -> None:
    a = BodyStore()
    files = [small_file(f"s/{i}", b"body %d" % i) for i in range(5)]
    for f in files:
        a.apply(f)
        a.bodies[f.sha256] = f"body {f.key[2:]}".encode()
    leaves = sorted({leaf_of(f.key) for f in files})
    push = {"type": "merkle-push", "leaves": pack_nodes(leaves), "pending": b""}
    push |= decode(encode(MerkleSync()._wire(a, files)))
    step = MerkleSync().handle(MemoryMerkleManifest(), push)
    assert sorted(step.apply, key=lambda e: e.key) == files
    assert step.small == {f.sha256: a.bodies[f.sha256] for f in files}

    push["small"][files[0].sha256] = b"rotten"  # a body that does not match: left out, not stored
    step = MerkleSync().handle(MemoryMerkleManifest(), push)
    assert len(step.apply) == 5 and files[0].sha256 not in step.small and len(step.small) == 4
    with pytest.raises(ValueError):
        MerkleSync().handle(MemoryMerkleManifest(), {**push, "small": {"x": 1}})
