"""A Merkle tree over the manifest and the anti-entropy exchange that walks it top-down.

Sans-I/O: plain deterministic classes. The node keeps one :class:`MerkleTree` per manifest,
updated on every applied entry (write, delete, repair, tombstone purge) in O(depth), rebuilt
from the stored entry hashes at start-up. Two nodes compare trees with :class:`MerkleSync`,
whose traffic grows with the difference, not with the manifest: identical manifests cost one
root comparison; k differing keys cost O(k * log n) bytes.

Why this shape:

* **Leaves by key hash.** Every key falls in one of ``FANOUT ** DEPTH`` leaves (65,536) by a
  blake2b of the key; a leaf's hash is the XOR of its entries' hashes (:func:`entry_hash`), and
  every inner node's the XOR of its children. XOR is its own inverse and order-free, so a write
  updates one leaf and its ancestors (5 XORs) and never rereads anything. Any key, of any
  prefix (cluster metadata, versions), is an entry like any other and covered the same way.
* **Leaf numbers are fixed.** ``leaf_of`` puts the key hash modulo 1024 in a leaf's high bits
  and the next six bits below it. Every peer must compute the same leaf, and each stored row
  keeps its leaf (storage/metadata.py), so the numbering never changes.
* **Short hashes on the wire.** Node hashes travel as their first 8 bytes and leaf contents as
  (8-byte key id, 8-byte entry hash) pairs: a missed difference needs a 64-bit collision.

Exchange (msgpack-friendly dicts; ``L`` = an increasing list of node numbers
packed as runs of varints, see :func:`pack_nodes`):

``{"type": "merkle-root", "shape": [fanout, depth], "root": 16 B}``
    Opening. Equal roots: the peer answers ``merkle-done``. Else the peer answers a level.
``{"type": "merkle-level", "level": d, "nodes": L, "hashes": bytes}``
    For each listed node of level d (all known to differ), its ``fanout`` children's hashes.
    The receiver compares them with its own, and answers the same message one level down for
    the children that differ, or, when the children are leaves, ``merkle-leaves``.
``{"type": "merkle-leaves", "leaves": L, "pending": L, "keys": [bytes ...]}``
    For each leaf of a batch, the sender's (key id, entry hash) pairs, 16 bytes each.
    ``pending``: differing leaves left for later batches (the exchange keeps no state).
``{"type": "merkle-entries", "leaves": L, "pending": L, "entries": [wire ...], "want": bytes,
"want_hashes": bytes}``
    The receiver's entries in those leaves that the sender lacks or holds differently, and the
    key ids the sender has and the receiver lacks, with their entry hashes in ``want_hashes``
    (the sender finds them among its rows by hash, hashing no key; ``want`` alone, from an
    older node, is matched by key id). Entries whose short hashes are equal are the same entry,
    so only the others are compared by key id. Leaves whose entries did not fit go back to
    ``pending``.
``{"type": "merkle-push", "leaves": L, "pending": L, "entries": [wire ...]}``
    The answer: the entries wanted, and those newer than what was received. Whoever receives
    a push with ``pending`` opens the next batch with ``merkle-leaves``.
``{"type": "merkle-done"}``
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .manifest import HASH_BYTES, ManifestEntry, entry_hash, newer

FANOUT = 16
DEPTH = 4  # levels below the root: 16**4 = 65,536 leaves (~15 entries each at 1,000,000)
LEAVES = FANOUT**DEPTH
_HIGH = 1024  # leaf_of: key hash modulo this in the high bits ...
_LOW = LEAVES // _HIGH  # ... and the next key-hash bits, modulo this, below
WIRE_HASH = 8  # bytes of a node hash, key id or entry hash on the wire
DEFAULT_MAX_ENTRIES = 5000  # entries per message
SUMMARY_PER_ENTRY = 8  # leaf pairs (16 B) per message: 8 x max_entries, ~640 KB, few round trips
INLINE_BYTES = 1 << 20  # bodies of small files carried with their entries, per message
INLINE_FILE = 64 * 1024  # the largest body carried (bigger files: repair fetches their chunks)
MIN_SPLIT_LEAVES = 256  # MerkleSync.split: pending leaves per exchange below which none is split off
DONE: dict[str, Any] = {"type": "merkle-done"}


# The personalisation strings are part of the leaf numbering stored on disk and of the key ids
# on the wire: never change them. Hashers are copied from these (a copy costs less than half of
# building one with its parameters: a catch-up hashes ~300,000 keys on each side).
_LEAF_HASHER = hashlib.blake2b(digest_size=8, person=b"p2pstore-bucket")
_KEY_ID_HASHER = hashlib.blake2b(digest_size=WIRE_HASH, person=b"p2pstore-keyid")


def key_hash(key: str) -> int:
    """The 64-bit key hash that places a key in its leaf."""
    h = _LEAF_HASHER.copy()
    h.update(key.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "big")


def leaf_of(key: str) -> int:
    """The key's leaf, in [0, LEAVES): the same on every node and run (not ``hash()``)."""
    h = key_hash(key)
    return (h % _HIGH) * _LOW + (h // _HIGH) % _LOW


def key_id(key: str) -> bytes:
    """A short name of a key inside its leaf (what leaf summaries carry instead of keys)."""
    h = _KEY_ID_HASHER.copy()
    h.update(key.encode("utf-8", "surrogatepass"))
    return h.digest()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pack_nodes(nodes: Iterable[int]) -> bytes:
    """A strictly increasing list of node numbers as runs: (gap, run length - 1) varint pairs.
    Scattered differences cost ~3 bytes a node, a contiguous range (a node that knows nothing,
    catching up) a few bytes in all, so ``pending`` stays small in every batch."""
    out = bytearray()
    nodes = list(nodes)
    end, i = 0, 0
    while i < len(nodes):
        start = nodes[i]
        if start < end:
            raise ValueError("node lists must be strictly increasing")
        j = i
        while j + 1 < len(nodes) and nodes[j + 1] == nodes[j] + 1:
            j += 1
        out += _varint(start - end) + _varint(j - i)
        end, i = nodes[j] + 1, j + 1
    return bytes(out)


def unpack_nodes(blob: object, limit: int) -> list[int]:
    """Node numbers from the wire; ValueError unless they are increasing and below ``limit``."""
    if not isinstance(blob, bytes):
        raise ValueError("node lists must be bytes")
    values, n, shift = [], 0, 0
    for byte in blob:
        n |= (byte & 0x7F) << shift
        shift += 7
        if shift > 35:
            raise ValueError("malformed node list")
        if not byte & 0x80:
            values.append(n)
            n, shift = 0, 0
    if shift or len(values) % 2:
        raise ValueError("malformed node list")
    nodes: list[int] = []
    end = 0
    for gap, run in zip(values[::2], values[1::2], strict=True):
        start = end + gap
        end = start + run + 1
        if end > limit:
            raise ValueError(f"node numbers must be below {limit}")
        nodes.extend(range(start, end))
    return nodes


def xor_fold(blob: bytes, count: int) -> int:
    """The XOR of ``count`` concatenated HASH_BYTES-byte big-endian hashes; ValueError unless
    ``blob`` holds exactly that many."""
    if len(blob) != count * HASH_BYTES:
        raise ValueError(f"{len(blob)} bytes are not {count} hashes")
    x = int.from_bytes(blob, "big")
    while count > 1:  # the upper hashes onto the lower ones, hash by hash, in one XOR
        half = count >> 1
        bits = 8 * HASH_BYTES * half
        x = (x >> bits) ^ (x & ((1 << bits) - 1))
        count -= half
    return x


class MerkleTree:
    """XOR Merkle tree over entry hashes, ``fanout`` children per node, ``depth`` levels."""

    def __init__(self, fanout: int = FANOUT, depth: int = DEPTH) -> None:
        if fanout < 2 or depth < 1:
            raise ValueError("fanout must be >= 2 and depth >= 1")
        self.fanout, self.depth = fanout, depth
        self.levels: list[list[int]] = [[0] * fanout**d for d in range(depth + 1)]
        self.entries = 0

    @property
    def leaves(self) -> int:
        return self.fanout**self.depth

    def toggle(self, leaf: int, h: bytes) -> None:
        """XOR one entry hash into its leaf and every ancestor (adding and removing alike)."""
        x = int.from_bytes(h, "big")
        for level in range(self.depth, -1, -1):
            self.levels[level][leaf] ^= x
            leaf //= self.fanout

    def add(self, e: ManifestEntry) -> None:
        self.toggle(leaf_of(e.key), entry_hash(e))
        self.entries += 1

    def remove(self, e: ManifestEntry) -> None:
        self.toggle(leaf_of(e.key), entry_hash(e))
        self.entries -= 1

    def replace(self, old: ManifestEntry | None, new: ManifestEntry) -> None:
        """Account for ``old`` (if any) overwritten by ``new``: one leaf path, or two if the
        key changed (it never does for LWW; kept general)."""
        if old is not None:
            self.remove(old)
        self.add(new)

    @classmethod
    def build(
        cls, pairs: Iterable[tuple[int, bytes]], fanout: int = FANOUT, depth: int = DEPTH
    ) -> MerkleTree:
        """A tree from (leaf, entry hash) pairs: leaves first, then each level once (start-up
        cost is one pass over the stored hashes plus 70,000 XORs)."""
        tree = cls(fanout, depth)
        leaves = tree.levels[depth]
        value = int.from_bytes
        n = 0
        for leaf, h in pairs:
            leaves[leaf] ^= value(h, "big")
            n += 1
        tree.entries = n
        tree._rehash()
        return tree

    @classmethod
    def from_leaf_blobs(
        cls, rows: Iterable[tuple[int, int, bytes]], fanout: int = FANOUT, depth: int = DEPTH
    ) -> MerkleTree:
        """A tree from (leaf, entry count, the leaf's entry hashes concatenated) rows: what one
        grouped query returns. Each leaf's hashes are folded in a few big-integer XORs (halves
        onto halves), not one Python step per entry (a million entries: 0.31 s of CPU with the
        query, against 0.50 s row by row)."""
        tree = cls(fanout, depth)
        leaves = tree.levels[depth]
        n = 0
        for leaf, count, blob in rows:
            leaves[leaf] ^= xor_fold(blob, count)
            n += count
        tree.entries = n
        tree._rehash()
        return tree

    def _rehash(self) -> None:
        """Every inner level from the leaves (4,369 nodes)."""
        for level in range(self.depth - 1, -1, -1):
            below, here = self.levels[level + 1], self.levels[level]
            for i in range(len(here)):
                acc = 0
                for c in below[i * self.fanout : (i + 1) * self.fanout]:
                    acc ^= c
                here[i] = acc

    def leaves_blob(self) -> bytes:
        """The entry count and every leaf hash, as stored on a clean shutdown."""
        leaves = b"".join(x.to_bytes(HASH_BYTES, "big") for x in self.levels[self.depth])
        return self.entries.to_bytes(8, "big") + leaves

    @classmethod
    def from_leaves_blob(cls, blob: bytes, fanout: int = FANOUT, depth: int = DEPTH) -> MerkleTree:
        """The tree saved by :meth:`leaves_blob` (inner levels recomputed: 4,369 nodes)."""
        if len(blob) != 8 + fanout**depth * HASH_BYTES:
            raise ValueError("a saved tree of another shape")
        leaves = blob[8:]
        pairs = ((i, leaves[i * HASH_BYTES : (i + 1) * HASH_BYTES]) for i in range(fanout**depth))
        tree = cls.build(pairs, fanout, depth)
        tree.entries = int.from_bytes(blob[:8], "big")
        return tree

    def root(self) -> bytes:
        return self.levels[0][0].to_bytes(HASH_BYTES, "big")

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index].to_bytes(HASH_BYTES, "big")

    def children_wire(self, level: int, index: int) -> bytes:
        """The short hashes of node (level, index)'s children, concatenated."""
        lo = index * self.fanout
        return b"".join(
            x.to_bytes(HASH_BYTES, "big")[:WIRE_HASH] for x in self.levels[level + 1][lo : lo + self.fanout]
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MerkleTree) and self.levels == other.levels and self.entries == other.entries

    __hash__ = None  # type: ignore[assignment]


class MerkleStore(Protocol):
    """What MerkleSync needs from a node's manifest (read-only; applying is the caller's)."""

    def get(self, key: str) -> ManifestEntry | None: ...

    def merkle(self) -> MerkleTree: ...

    def hashes_in_leaf(self, leaf: int) -> Iterable[tuple[str, bytes]]: ...


class MemoryMerkleManifest:
    """In-memory MerkleStore with LWW apply: for tests, benchmarks and as a reference."""

    def __init__(self) -> None:
        self._tree = MerkleTree()
        self._leaves: dict[int, dict[str, ManifestEntry]] = {}

    def get(self, key: str) -> ManifestEntry | None:
        return self._leaves.get(leaf_of(key), {}).get(key)

    def merkle(self) -> MerkleTree:
        return self._tree

    def hashes_in_leaf(self, leaf: int) -> list[tuple[str, bytes]]:
        return [(k, entry_hash(e)) for k, e in self._leaves.get(leaf, {}).items()]

    def apply(self, e: ManifestEntry) -> bool:
        leaf = self._leaves.setdefault(leaf_of(e.key), {})
        old = leaf.get(e.key)
        if not newer(old, e):
            return False
        leaf[e.key] = e
        self._tree.replace(old, e)
        return True

    def __len__(self) -> int:
        return sum(len(v) for v in self._leaves.values())


@dataclass
class MerkleStep:
    """What handling one message gives: the reply (None: stop) and the entries to apply."""

    reply: dict[str, Any] | None
    apply: list[ManifestEntry] = field(default_factory=list)
    small: dict[str, bytes] = field(default_factory=dict)  # checked bodies of small files in ``apply``


class MerkleSync:
    """The stateless top-down exchange (see the module docstring).

    Initiator: ``msg = sync.open(store)``; loop: send it, ``step = sync.handle(store, answer)``,
    apply ``step.apply``, stop when ``step.reply`` is None. Responder: ``step = sync.handle(store,
    msg)``, apply ``step.apply``, answer ``step.reply or DONE``. Malformed input: ValueError.
    """

    TYPES = frozenset(
        {"merkle-root", "merkle-level", "merkle-leaves", "merkle-entries", "merkle-push", "merkle-done"}
    )

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, fanout: int = FANOUT, depth: int = DEPTH
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.fanout, self.depth = fanout, depth
        self.leaves = fanout**depth

    def open(self, store: MerkleStore) -> dict[str, Any]:
        return {"type": "merkle-root", "shape": [self.fanout, self.depth], "root": store.merkle().root()}

    def handle(self, store: MerkleStore, msg: object) -> MerkleStep:
        if not isinstance(msg, Mapping) or not isinstance(msg.get("type"), str):
            raise ValueError("sync message must be a map with a string 'type'")
        kind = msg["type"]
        if kind == "merkle-root":
            return self._on_root(store, msg)
        if kind == "merkle-level":
            return self._on_level(store, msg)
        if kind == "merkle-leaves":
            return self._on_leaves(store, msg)
        if kind == "merkle-entries":
            return self._on_entries(store, msg)
        if kind == "merkle-push":
            return self._on_push(store, msg)
        if kind == "merkle-done":
            return MerkleStep(None)
        raise ValueError(f"unknown sync message type {kind[:40]!r}")

    def split(self, store: MerkleStore, msg: dict[str, Any], ways: int) -> list[dict[str, Any]]:
        """``msg`` (a reply about to be sent) and up to ``ways - 1`` more openings of leaf
        batches that share its ``pending`` leaves out: independent exchanges over disjoint leaves
        that may run at once (the protocol keeps no state), so that both nodes work at the same
        time instead of in turns. A reply without enough pending leaves comes back alone."""
        if ways < 2 or msg.get("type") not in ("merkle-leaves", "merkle-entries", "merkle-push"):
            return [msg]
        pending = unpack_nodes(msg.get("pending"), self.leaves)
        if len(pending) < ways * MIN_SPLIT_LEAVES:
            return [msg]
        step = -(-len(pending) // ways)
        parts = [pending[i : i + step] for i in range(0, len(pending), step)]
        return [{**msg, "pending": pack_nodes(parts[0])}, *(self._leaves_msg(store, p) for p in parts[1:])]

    # -- the descent -----------------------------------------------------------------------

    def _level_msg(self, store: MerkleStore, level: int, nodes: list[int]) -> dict[str, Any]:
        tree = store.merkle()
        hashes = b"".join(tree.children_wire(level, n) for n in nodes)
        return {"type": "merkle-level", "level": level, "nodes": pack_nodes(nodes), "hashes": hashes}

    def _on_root(self, store: MerkleStore, msg: Mapping[str, Any]) -> MerkleStep:
        shape = msg.get("shape")
        if not isinstance(shape, list | tuple) or list(shape) != [self.fanout, self.depth]:
            raise ValueError(f"tree shape mismatch: peer {str(shape)[:40]}, ours {[self.fanout, self.depth]}")
        root = msg.get("root")
        if not isinstance(root, bytes) or len(root) != HASH_BYTES:
            raise ValueError("the root must be 16 bytes")
        if root == store.merkle().root():
            return MerkleStep(dict(DONE))
        return MerkleStep(self._level_msg(store, 0, [0]))

    def _on_level(self, store: MerkleStore, msg: Mapping[str, Any]) -> MerkleStep:
        level = msg.get("level")
        if type(level) is not int or not 0 <= level < self.depth:
            raise ValueError(f"level must be in [0, {self.depth})")
        nodes = unpack_nodes(msg.get("nodes"), self.fanout**level)
        hashes = msg.get("hashes")
        if not isinstance(hashes, bytes) or len(hashes) != len(nodes) * self.fanout * WIRE_HASH:
            raise ValueError("hashes must hold fanout short hashes per node")
        tree = store.merkle()
        differ: list[int] = []
        for i, n in enumerate(nodes):
            mine = tree.children_wire(level, n)
            theirs = hashes[i * self.fanout * WIRE_HASH : (i + 1) * self.fanout * WIRE_HASH]
            for c in range(self.fanout):
                if mine[c * WIRE_HASH : (c + 1) * WIRE_HASH] != theirs[c * WIRE_HASH : (c + 1) * WIRE_HASH]:
                    differ.append(n * self.fanout + c)
        if not differ:
            return MerkleStep(dict(DONE))
        if level + 1 < self.depth:
            return MerkleStep(self._level_msg(store, level + 1, differ))
        return MerkleStep(self._leaves_msg(store, differ))

    # -- the leaves ------------------------------------------------------------------------

    def _leaves_msg(self, store: MerkleStore, todo: Sequence[int]) -> dict[str, Any]:
        """Our (key id, entry hash) pairs for a batch of leaves that fits max_entries."""
        batch: list[int] = []
        keys: list[bytes] = []
        count = 0
        for leaf in todo:
            pairs = list(store.hashes_in_leaf(leaf))
            if batch and count + len(pairs) > self.max_entries * SUMMARY_PER_ENTRY:
                break
            batch.append(leaf)
            keys.append(b"".join(key_id(k) + bytes(h[:WIRE_HASH]) for k, h in pairs))
            count += len(pairs)
        rest = list(todo[len(batch) :])
        return {
            "type": "merkle-leaves",
            "leaves": pack_nodes(batch),
            "pending": pack_nodes(rest),
            "keys": keys,
        }

    def _leaf_lists(self, msg: Mapping[str, Any]) -> tuple[list[int], list[int]]:
        leaves = unpack_nodes(msg.get("leaves"), self.leaves)
        pending = unpack_nodes(msg.get("pending"), self.leaves)
        if set(leaves) & set(pending):
            raise ValueError("a leaf is both sent and pending")
        return leaves, pending

    def _on_leaves(self, store: MerkleStore, msg: Mapping[str, Any]) -> MerkleStep:
        leaves, pending = self._leaf_lists(msg)
        keys = msg.get("keys")
        if not isinstance(keys, list | tuple) or len(keys) != len(leaves):
            raise ValueError("keys must hold one blob per leaf")
        done: list[int] = []
        entries: list[dict[str, Any]] = []
        want: list[bytes] = []
        want_hashes: list[bytes] = []
        pair = 2 * WIRE_HASH
        for leaf, blob in zip(leaves, keys, strict=True):
            if not isinstance(blob, bytes) or len(blob) % pair:
                raise ValueError("a leaf's keys must be 16-byte (key id, entry hash) pairs")
            theirs = [
                (blob[i : i + WIRE_HASH], blob[i + WIRE_HASH : i + pair]) for i in range(0, len(blob), pair)
            ]
            their_hashes = {h for _, h in theirs}
            # Entries with the same hash are the same entry (key and version): only the others
            # are looked at, and only their keys hashed (a node catching up hashes none of its own)
            mine = [(key, bytes(h[:WIRE_HASH])) for key, h in store.hashes_in_leaf(leaf)]
            send = [key for key, h in mine if h not in their_hashes]
            if done and len(entries) + len(send) > self.max_entries:
                break  # this leaf and the rest wait for a later batch
            done.append(leaf)
            for key in send:
                e = store.get(key)
                if e is not None:
                    entries.append(e)
            my_hashes = {h for _, h in mine}
            differ = [(kid, h) for kid, h in theirs if h not in my_hashes]
            if differ:
                mine_differ = {key_id(key) for key in send}  # keys held here in another version
                for kid, h in differ:
                    if kid not in mine_differ:
                        want.append(kid)
                        want_hashes.append(h)
        rest = [*leaves[len(done) :], *pending]
        return MerkleStep({
            "type": "merkle-entries", "leaves": pack_nodes(done), "pending": pack_nodes(rest),
            **self._wire(store, entries), "want": b"".join(dict.fromkeys(want)),
            "want_hashes": b"".join(want_hashes),
        })  # fmt: skip

    def _wire(self, store: MerkleStore, entries: list[ManifestEntry]) -> dict[str, Any]:
        """``entries`` on the wire, with the bodies of small files (up to INLINE_BYTES in all)
        when the store keeps them: a node catching up gets a small file's data in the same
        message as its entry, instead of one fetch per file afterwards."""
        body_of = getattr(store, "small_data", None)
        small: dict[str, bytes] = {}
        budget = INLINE_BYTES
        for e in entries:
            if body_of is None or e.deleted or e.chunks != (e.sha256,) or e.size > min(budget, INLINE_FILE):
                continue
            data = body_of(e.sha256)
            if data is not None and e.sha256 not in small:
                small[e.sha256] = data
                budget -= len(data)
        return {"entries": [e.to_wire() for e in entries], "small": small}

    @staticmethod
    def _small(msg: Mapping[str, Any], apply: list[ManifestEntry]) -> dict[str, bytes]:
        """The bodies sent along that belong to entries being applied and match their sha256
        (one that does not is left out: repair fetches that file from another copy)."""
        raw = msg.get("small", {})
        if not isinstance(raw, Mapping):
            raise ValueError("small must map sha256 to bytes")
        wanted = {e.sha256 for e in apply if not e.deleted and e.chunks == (e.sha256,)}
        out = {}
        for sha, data in raw.items():
            if not isinstance(sha, str) or not isinstance(data, bytes):
                raise ValueError("small must map sha256 to bytes")
            if sha in wanted and hashlib.sha256(data).hexdigest() == sha:
                out[sha] = data
        return out

    def _parse_entries(self, msg: Mapping[str, Any], leaves: list[int]) -> dict[str, ManifestEntry]:
        raw = msg.get("entries")
        if not isinstance(raw, list | tuple):
            raise ValueError("entries must be a list")
        allowed = set(leaves)
        out: dict[str, ManifestEntry] = {}
        for obj in raw:
            e = ManifestEntry.from_wire(obj)
            if leaf_of(e.key) not in allowed:
                raise ValueError(f"entry {e.key[:80]!r} is outside the leaves sent")
            if e.key in out:
                raise ValueError(f"duplicate entry for key {e.key[:80]!r}")
            out[e.key] = e
        return out

    def _on_entries(self, store: MerkleStore, msg: Mapping[str, Any]) -> MerkleStep:
        leaves, pending = self._leaf_lists(msg)
        theirs = self._parse_entries(msg, leaves)
        want = msg.get("want")
        if not isinstance(want, bytes) or len(want) % WIRE_HASH:
            raise ValueError("want must be packed key ids")
        wanted = {want[i : i + WIRE_HASH] for i in range(0, len(want), WIRE_HASH)}
        by_hash = msg.get("want_hashes")  # the same entries by their short hashes (no key hashing)
        if by_hash is not None and (not isinstance(by_hash, bytes) or len(by_hash) % WIRE_HASH):
            raise ValueError("want_hashes must be packed entry hashes")
        wanted_hashes = {by_hash[i : i + WIRE_HASH] for i in range(0, len(by_hash or b""), WIRE_HASH)}
        ours = {key: store.get(key) for key in theirs}
        apply = [e for e in theirs.values() if newer(ours[e.key], e)]
        push = [mine for key, mine in ours.items() if mine is not None and newer(theirs[key], mine)]
        if wanted:  # only then the leaves are read
            for leaf in leaves:
                for key, h in store.hashes_in_leaf(leaf):
                    if key in theirs:
                        continue
                    hit = h[:WIRE_HASH] in wanted_hashes if by_hash is not None else key_id(key) in wanted
                    if hit and (mine := store.get(key)) is not None:
                        push.append(mine)
        reply = {
            "type": "merkle-push",
            "leaves": pack_nodes(leaves),
            "pending": pack_nodes(pending),
            **self._wire(store, push),
        }
        return MerkleStep(reply, apply, self._small(msg, apply))

    def _on_push(self, store: MerkleStore, msg: Mapping[str, Any]) -> MerkleStep:
        leaves, pending = self._leaf_lists(msg)
        theirs = self._parse_entries(msg, leaves)
        apply = [e for e in theirs.values() if newer(store.get(e.key), e)]
        reply = self._leaves_msg(store, pending) if pending else None
        return MerkleStep(reply, apply, self._small(msg, apply))


@dataclass
class MerkleStats:
    """What one in-process exchange cost."""

    messages: int = 0
    bytes: int = 0
    entries_sent: int = 0
    applied_a: int = 0
    applied_b: int = 0


def run_merkle_exchange(
    sync: MerkleSync,
    a: MerkleStore,
    b: MerkleStore,
    apply_a: Callable[[list[ManifestEntry]], int],
    apply_b: Callable[[list[ManifestEntry]], int],
    encode: Callable[[dict[str, Any]], bytes],
    decode: Callable[[bytes], dict[str, Any]],
    max_messages: int = 100_000,
) -> MerkleStats:
    """The loop a node runs, with the network replaced by ``encode``/``decode`` (msgpack in the
    tests): every message crosses as bytes, and ``bytes`` counts them all."""
    stats = MerkleStats()

    def wire(m: dict[str, Any]) -> dict[str, Any]:
        data = encode(m)
        stats.messages += 1
        stats.bytes += len(data)
        stats.entries_sent += len(m.get("entries", ()))
        return decode(data)

    msg: dict[str, Any] | None = sync.open(a)
    while msg is not None:
        if stats.messages >= max_messages:
            raise RuntimeError("exchange did not terminate")
        step_b = sync.handle(b, wire(msg))
        stats.applied_b += apply_b(step_b.apply) if step_b.apply else 0
        step_a = sync.handle(a, wire(step_b.reply or dict(DONE)))
        stats.applied_a += apply_a(step_a.apply) if step_a.apply else 0
        msg = step_a.reply
    return stats
