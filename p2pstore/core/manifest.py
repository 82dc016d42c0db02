"""Manifest entries, last-writer-wins merge, bucket digests and the anti-entropy exchange.

Sans-I/O: nothing here touches sockets, disks or clocks. The node shell owns a store that
implements :class:`ManifestStore`, feeds peer messages to :class:`ManifestSync` and applies the
entries it returns (always through :func:`merge`, so applying is idempotent and order-free).

Why this shape:

* **LWW by version** (an HLC string whose lexicographic order is the write order) makes the
  manifest a state-based CRDT: merge is commutative, associative and idempotent, so replicas
  converge whatever order gossip arrives in. Equal versions with different contents (only a bug
  or a forged message can cause them) are settled by comparing the whole entry, so even then
  every replica picks the same winner.
* **Bucket digests** (XOR of entry hashes per bucket of the key hash) are order-independent and
  O(1) to maintain on every write, so two nodes find which buckets differ by comparing 1024
  small hashes and ship entries for those buckets only ("repair only what differs").

Sync protocol (all messages are msgpack-friendly dicts; ``H`` = 16-byte hash):

``{"type": "manifest-digest", "nbuckets": n, "root": H}``  (optionally ``"buckets": [H] * n``)
    Opening message. Root only: the peer answers ``manifest-done`` when the roots match, else its
    own full digest (the roles swap). With buckets: the peer answers ``manifest-subdigest``.
``{"type": "manifest-subdigest", "buckets": [b...], "pending": [b...], "subs": [[H] * 16 ...]}``
    Second level, for a batch of differing buckets: each bucket's 16 sub-bucket hashes (a key's
    sub-bucket comes from the same hash as its bucket). The peer answers ``manifest-entries``
    for just the sub-buckets that differ, so a change costs its sub-bucket (~1/16 of a bucket,
    about 6 entries at 100,000 files) instead of its whole bucket.
``{"type": "manifest-entries", "buckets": [b...], "pending": [b...], "entries": [wire...]}``
    (optionally ``"subs": [[s...] ...]``, one list of sub-bucket numbers per bucket) The sender's
    entries for every key in those buckets (or only those sub-buckets): whole units, so a missing
    key means "I do not have it". ``pending`` lists the differing buckets left for later batches.
``{"type": "manifest-push", "buckets": [b...], "pending": [b...], "entries": [wire...]}``
    (``"subs"`` as above) The answer to ``manifest-entries``: the receiver's entries in those
    units that the sender lacked or held older. ``pending`` is echoed back so the next batch
    needs no server state; whoever receives a push with ``pending`` opens the next batch with a
    ``manifest-subdigest``.
``{"type": "manifest-done"}``
    Nothing more to say.

The exchange is stateless on both sides: each message carries what the next step needs.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .keys import CONTROL, MAX_KEY_BYTES, validate_key

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DONE",
    "HASH_BYTES",
    "NBUCKETS",
    "NSUBS",
    "BucketDigest",
    "ExchangeStats",
    "ManifestEntry",
    "ManifestStore",
    "ManifestSync",
    "MemoryManifest",
    "SyncStep",
    "bucket_of",
    "differing_buckets",
    "entry_hash",
    "merge",
    "newer",
    "run_exchange",
    "slot_of",
    "sub_digest",
    "sub_digest_of_hashes",
]

NBUCKETS = 1024
NSUBS = 16  # sub-buckets per bucket (the second digest level)
SUBDIGEST_BATCH = 256  # buckets per manifest-subdigest message (64 KiB of hashes)
"""Default bucket count: 1024 x 16 B = 16 KiB per full digest, ~1000 keys per bucket at 1M keys."""
HASH_BYTES = 16
"""Size of entry hashes, bucket hashes and the root (128 bits: collisions are not a concern)."""
DEFAULT_MAX_ENTRIES = 5000
"""Soft cap on entries per ``manifest-entries`` batch (whole buckets; at least one bucket)."""
MAX_SIZE = 2**63 - 1
"""Largest file size accepted (SQLite INTEGER)."""
MAX_CHUNKS = 1 << 22
"""Largest chunk list accepted (16 TiB at 4 MiB chunks): bounds memory used by one bad message."""
MAX_CONTENT_TYPE = 255
MAX_META_ITEMS = 64  # object metadata: S3 allows 2 KiB of user metadata; ours bounds the whole map
MAX_META_BYTES = 8 * 1024
MAX_NODE_ID = 255
VERSIONS = ".p2pstore/versions/"  # core/versions.py: kept versions' keys
VERSION_KEY_EXTRA = len(VERSIONS) + 1 + 20 + MAX_NODE_ID

DONE: dict[str, Any] = {"type": "manifest-done"}

_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"([0-9]{13})\.([0-9]{6})\.(.*)", re.DOTALL)
_FIELDS = ("key", "version", "size", "sha256", "chunks", "content_type", "deleted", "modified")


def meta_pairs(meta: object) -> tuple[tuple[str, str], ...]:
    """Metadata from its wire form (a map, or nothing) as sorted pairs; ValueError when not a
    map of strings to strings."""
    if meta is None:
        return ()
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a map, got {type(meta).__name__}")
    if len(meta) > MAX_META_ITEMS:
        raise ValueError(f"meta: more than {MAX_META_ITEMS} items")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("meta must map strings to strings")
    return tuple(sorted(meta.items()))


def check_meta(meta: object) -> None:
    """Raise ValueError unless ``meta`` is sorted, unique (name, value) string pairs, bounded,
    with printable names and values."""
    if not isinstance(meta, tuple):
        raise ValueError("meta must be a tuple of pairs")
    if len(meta) > MAX_META_ITEMS:
        raise ValueError(f"meta: more than {MAX_META_ITEMS} items")
    total = 0
    previous = None
    for pair in meta:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError("meta must be (name, value) string pairs")
        name, value = pair
        if not name or _has_control(name) or _has_control(value):
            raise ValueError("meta names must be non-empty; names and values without control characters")
        if previous is not None and name <= previous:
            raise ValueError("meta names must be sorted and unique")
        previous = name
        total += len(name.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))
    if total > MAX_META_BYTES:
        raise ValueError(f"meta larger than {MAX_META_BYTES} bytes")


def _has_control(s: str) -> bool:
    return CONTROL.search(s) is not None


def _check_version(version: object) -> str:
    """Stricter than ``hlc.parse_version`` (which lets ``int()`` accept '+', '_' and spaces):
    only ASCII digits, so that string order really is version order."""
    if not isinstance(version, str):
        raise ValueError(f"version must be a string, got {type(version).__name__}")
    m = _VERSION.fullmatch(version)
    if m is None:
        raise ValueError(f"malformed version {version[:80]!r}")
    node_id = m.group(3)
    if len(node_id) > MAX_NODE_ID or _has_control(node_id):
        raise ValueError("malformed version: bad node id")
    return version


@dataclass(frozen=True)
class ManifestEntry:
    """What one replica knows about one key at one version (a live file or a tombstone)."""

    key: str
    version: str
    size: int
    sha256: str
    chunks: tuple[str, ...]
    content_type: str
    deleted: bool
    modified: float
    # Object metadata (S3's ETag as "md5", user metadata, Content-Disposition, ...): sorted
    # (name, value) pairs, so the entry stays hashable and compares equal however it was built.
    meta: tuple[tuple[str, str], ...] = ()
    # Each chunk's length, when the chunks are not all the configured size but the last (an
    # object composed from parts: each part ends with a short chunk). Empty: the usual sizes.
    lengths: tuple[int, ...] = ()

    @classmethod
    def tombstone(
        cls, key: str, version: str, modified: float, meta: tuple[tuple[str, str], ...] = ()
    ) -> ManifestEntry:
        """A deletion marker: it must win over older writes, so it is an entry like any other.
        ``meta``: only the store's own marks (``p2p:*``, e.g. a versioned folder's delete marker)."""
        return cls(key, version, 0, "", (), "", True, float(modified), meta)

    def to_wire(self) -> dict[str, Any]:
        """Msgpack/JSON-friendly dict (field names as here; chunks as a list)."""
        return {
            "key": self.key,
            "version": self.version,
            "size": self.size,
            "sha256": self.sha256,
            "chunks": list(self.chunks),
            "content_type": self.content_type,
            "deleted": self.deleted,
            "modified": self.modified,
            **({"meta": dict(self.meta)} if self.meta else {}),
            **({"lengths": list(self.lengths)} if self.lengths else {}),
        }

    @classmethod
    def from_wire(cls, obj: object) -> ManifestEntry:
        """Parse and validate a wire dict; raise ValueError (only) on anything malformed.

        Unknown extra fields are ignored; ``meta`` and ``lengths`` are optional (absent: no
        metadata; chunks of the usual size).
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"manifest entry must be a map, got {type(obj).__name__}")
        missing = [f for f in _FIELDS if f not in obj]
        if missing:
            raise ValueError(f"manifest entry lacks field(s): {', '.join(missing)}")
        chunks = obj["chunks"]
        if not isinstance(chunks, list | tuple):
            raise ValueError(f"chunks must be a list, got {type(chunks).__name__}")
        if len(chunks) > MAX_CHUNKS:
            raise ValueError(f"chunks: more than {MAX_CHUNKS} entries")
        modified = obj["modified"]
        if isinstance(modified, int) and not isinstance(modified, bool):
            if abs(modified) > 2**53:
                raise ValueError("modified out of range")
            modified = float(modified)
        entry = cls(
            key=obj["key"],
            version=obj["version"],
            size=obj["size"],
            sha256=obj["sha256"],
            chunks=tuple(chunks),
            content_type=obj["content_type"],
            deleted=obj["deleted"],
            modified=modified,
            meta=meta_pairs(obj.get("meta")),
            lengths=_lengths(obj.get("lengths")),
        )
        entry.validate()
        return entry

    def validate(self) -> ManifestEntry:
        """Raise ValueError saying what is wrong; return self when the entry is well-formed."""
        if not isinstance(self.key, str):
            raise ValueError(f"key must be a string, got {type(self.key).__name__}")
        # a kept version's key is its base key plus a reserved prefix and a version
        validate_key(self.key, MAX_KEY_BYTES + (VERSION_KEY_EXTRA if self.key.startswith(VERSIONS) else 0))
        _check_version(self.version)
        if not isinstance(self.deleted, bool):
            raise ValueError("deleted must be a boolean")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise ValueError("size must be an integer")
        if not 0 <= self.size <= MAX_SIZE:
            raise ValueError("size out of range")
        if not isinstance(self.sha256, str):
            raise ValueError("sha256 must be a string")
        if not isinstance(self.chunks, tuple):
            raise ValueError("chunks must be a tuple")
        for c in self.chunks:
            if not isinstance(c, str) or _HEX64.fullmatch(c) is None:
                raise ValueError("chunks must be 64-character lowercase hex sha256 digests")
        if not isinstance(self.content_type, str):
            raise ValueError("content_type must be a string")
        if len(self.content_type) > MAX_CONTENT_TYPE or _has_control(self.content_type):
            raise ValueError("content_type too long or contains control characters")
        if not isinstance(self.modified, float) or not math.isfinite(self.modified):
            raise ValueError("modified must be a finite number")
        check_meta(self.meta)
        if self.deleted:
            if any(not name.startswith("p2p:") for name, _ in self.meta):
                raise ValueError("a tombstone has no metadata but the store's own p2p:* marks")
            if self.size or self.sha256 or self.chunks:
                raise ValueError("a tombstone has size 0, no sha256 and no chunks")
        else:
            if _HEX64.fullmatch(self.sha256) is None:
                raise ValueError("sha256 must be a 64-character lowercase hex digest")
            if (self.size == 0) != (len(self.chunks) == 0):
                raise ValueError("an empty file has no chunks and a non-empty file has some")
            if len(self.chunks) > self.size:
                raise ValueError("more chunks than bytes")
        if self.lengths:
            _check_lengths(self)
        return self


def _lengths(raw: object) -> tuple[int, ...]:
    """Chunk lengths from their wire form (a list, or nothing); ValueError when not a list."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ValueError(f"lengths must be a list, got {type(raw).__name__}")
    if len(raw) > MAX_CHUNKS:
        raise ValueError(f"lengths: more than {MAX_CHUNKS} entries")
    return tuple(raw)


def _check_lengths(e: ManifestEntry) -> None:
    """Stored lengths must describe the chunks exactly: one positive length each, summing to
    the size (reads cut the object by them, so a wrong list would serve wrong bytes)."""
    if not isinstance(e.lengths, tuple):
        raise ValueError("lengths must be a tuple")
    if e.deleted:
        raise ValueError("a tombstone has no chunk lengths")
    if len(e.lengths) != len(e.chunks):
        raise ValueError("lengths must give one length per chunk")
    if not all(type(n) is int and n > 0 for n in e.lengths):
        raise ValueError("chunk lengths must be positive integers")
    if sum(e.lengths) != e.size:
        raise ValueError("chunk lengths must add up to the size")
    first: dict[str, int] = {}
    for sha, n in zip(e.chunks, e.lengths, strict=True):
        if first.setdefault(sha, n) != n:
            raise ValueError("a chunk named twice must have the same length")


def _order(e: ManifestEntry) -> tuple[Any, ...]:
    """Total order used by LWW: version first, then the whole entry so that ties are decided
    the same way on every replica (a tombstone beats a live entry of the same version)."""
    return (e.version, e.deleted, e.sha256, e.size, e.chunks, e.content_type, e.modified, e.lengths)


def newer(a: ManifestEntry | None, b: ManifestEntry) -> bool:
    """True when ``b`` should replace ``a`` (``a`` may be absent)."""
    return a is None or _order(b) > _order(a)


def merge(a: ManifestEntry | None, b: ManifestEntry | None) -> ManifestEntry | None:
    """LWW merge of two entries for the same key: commutative, associative, idempotent."""
    if a is None:
        return b
    if b is None:
        return a
    if a.key != b.key:
        raise ValueError(f"cannot merge entries of different keys {a.key!r} and {b.key!r}")
    return b if newer(a, b) else a


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def entry_hash(e: ManifestEntry) -> bytes:
    """16-byte hash of the entry's identity, used in bucket digests.

    Covers (key, version, deleted, sha256) as the design asks, plus the remaining fields so that
    two same-version entries that differ in anything (a bug or a forged message) never look equal
    and anti-entropy still converges them. Length-prefixed so no two field splits collide.
    """
    h = hashlib.blake2b(digest_size=HASH_BYTES, person=b"p2pstore-entry")
    h.update(_lp(e.key.encode("utf-8", "surrogatepass")))
    h.update(_lp(e.version.encode("utf-8", "surrogatepass")))
    h.update(b"\x01" if e.deleted else b"\x00")
    h.update(_lp(e.sha256.encode("utf-8", "surrogatepass")))
    h.update(struct.pack(">QdI", e.size & (2**64 - 1), e.modified, len(e.chunks)))
    for c in e.chunks:
        h.update(_lp(c.encode("utf-8", "surrogatepass")))
    h.update(_lp(e.content_type.encode("utf-8", "surrogatepass")))
    if e.meta:  # entries without metadata keep the hash they always had
        h.update(b"\x02")
        for name, value in e.meta:
            h.update(_lp(name.encode("utf-8", "surrogatepass")))
            h.update(_lp(value.encode("utf-8", "surrogatepass")))
    if e.lengths:  # likewise: entries without stored lengths keep their hash
        h.update(b"\x03" + struct.pack(f">{len(e.lengths)}Q", *e.lengths))
    return h.digest()


def slot_of(key: str, nbuckets: int = NBUCKETS) -> tuple[int, int]:
    """Stable (bucket, sub-bucket) of a key: blake2b, identical on every node and run."""
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=8, person=b"p2pstore-bucket"
    ).digest()
    h = int.from_bytes(digest, "big")
    return h % nbuckets, (h // nbuckets) % NSUBS


def bucket_of(key: str, nbuckets: int = NBUCKETS) -> int:
    """Stable bucket of a key (blake2b, identical on every node and run; not ``hash()``)."""
    return slot_of(key, nbuckets)[0]


def sub_digest(entries: Iterable[ManifestEntry], nbuckets: int = NBUCKETS) -> list[bytes]:
    """The NSUBS hashes of one bucket's entries (XOR of entry hashes per sub-bucket)."""
    return sub_digest_of_hashes(((e.key, entry_hash(e)) for e in entries), nbuckets)


def sub_digest_of_hashes(pairs: Iterable[tuple[str, bytes]], nbuckets: int = NBUCKETS) -> list[bytes]:
    """The same from (key, entry_hash) pairs, for stores that keep each entry's hash."""
    subs = [0] * NSUBS
    for key, h in pairs:
        subs[slot_of(key, nbuckets)[1]] ^= int.from_bytes(h, "big")
    return [x.to_bytes(HASH_BYTES, "big") for x in subs]


class BucketDigest:
    """Per-bucket XOR of entry hashes: order-independent and updated in O(1) per write."""

    def __init__(self, nbuckets: int = NBUCKETS) -> None:
        if nbuckets < 1:
            raise ValueError("nbuckets must be >= 1")
        self.nbuckets = nbuckets
        self._buckets = [0] * nbuckets

    def add(self, e: ManifestEntry) -> None:
        """Account for a newly stored entry."""
        self._buckets[bucket_of(e.key, self.nbuckets)] ^= int.from_bytes(entry_hash(e), "big")

    def add_hash(self, bucket: int, h: bytes) -> None:
        """Account for an entry by its precomputed bucket and entry_hash (fast rebuilds)."""
        self._buckets[bucket] ^= int.from_bytes(h, "big")

    def remove(self, e: ManifestEntry) -> None:
        """Account for an entry that is no longer stored (XOR is its own inverse)."""
        self.add(e)

    def replace(self, old: ManifestEntry | None, new: ManifestEntry) -> None:
        """Account for ``old`` (if any) being overwritten by ``new``."""
        if old is not None:
            self.remove(old)
        self.add(new)

    def digest(self) -> list[bytes]:
        """One 16-byte hash per bucket."""
        return [b.to_bytes(HASH_BYTES, "big") for b in self._buckets]

    def root(self) -> bytes:
        """Hash of all bucket hashes: equal roots mean equal manifests (cheap first check)."""
        return _root_of(self.digest())


def _root_of(buckets: Sequence[bytes]) -> bytes:
    h = hashlib.blake2b(digest_size=HASH_BYTES, person=b"p2pstore-root")
    h.update(struct.pack(">I", len(buckets)))
    for b in buckets:
        h.update(b)
    return h.digest()


def differing_buckets(local: Sequence[bytes], remote: Sequence[bytes]) -> list[int]:
    """Indexes of buckets whose hashes differ (digests must have the same bucket count)."""
    if len(local) != len(remote):
        raise ValueError(f"bucket count mismatch: {len(local)} != {len(remote)}")
    return [i for i, (a, b) in enumerate(zip(local, remote, strict=True)) if a != b]


class ManifestStore(Protocol):
    """What ManifestSync needs from a node's manifest (read-only; applying is the caller's).

    A store may also offer ``hashes_in_bucket(bucket) -> Iterable[(key, entry_hash)]``: when it
    keeps each entry's hash, the sub-bucket digests are computed without decoding entries."""

    def get(self, key: str) -> ManifestEntry | None: ...

    def entries_in_bucket(self, bucket: int) -> Iterable[ManifestEntry]: ...

    def digest(self) -> BucketDigest: ...


class MemoryManifest:
    """In-memory ManifestStore with LWW apply; for tests, simulation and as a reference."""

    def __init__(self, nbuckets: int = NBUCKETS) -> None:
        self.nbuckets = nbuckets
        self._digest = BucketDigest(nbuckets)
        self._buckets: list[dict[str, ManifestEntry]] = [{} for _ in range(nbuckets)]

    def get(self, key: str) -> ManifestEntry | None:
        return self._buckets[bucket_of(key, self.nbuckets)].get(key)

    def entries_in_bucket(self, bucket: int) -> Iterable[ManifestEntry]:
        return list(self._buckets[bucket].values())

    def digest(self) -> BucketDigest:
        return self._digest

    def apply(self, e: ManifestEntry) -> bool:
        """Merge ``e`` in; return True when it replaced what was stored."""
        bucket = self._buckets[bucket_of(e.key, self.nbuckets)]
        old = bucket.get(e.key)
        if not newer(old, e):
            return False
        bucket[e.key] = e
        self._digest.replace(old, e)
        return True

    def snapshot(self) -> dict[str, ManifestEntry]:
        """Plain dict copy of all entries."""
        return {k: v for b in self._buckets for k, v in b.items()}

    def __iter__(self) -> Iterator[ManifestEntry]:
        for b in self._buckets:
            yield from b.values()

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)


@dataclass
class SyncStep:
    """Result of handling one message: what to send back (None: nothing) and what to apply.

    ``apply`` holds entries that were newer than the store's when the message was handled; the
    caller applies each with LWW (``merge``), which stays correct if the store changed since.
    """

    reply: dict[str, Any] | None
    apply: list[ManifestEntry] = field(default_factory=list)


def _msg_type(msg: object) -> str:
    if not isinstance(msg, Mapping):
        raise ValueError(f"sync message must be a map, got {type(msg).__name__}")
    t = msg.get("type")
    if not isinstance(t, str):
        raise ValueError("sync message lacks a string 'type'")
    return t


class ManifestSync:
    """Stateless anti-entropy exchange between two nodes' manifests (see module docstring).

    Initiator: ``msg = sync.open(store)``; then loop: send ``msg``, get the peer's answer,
    ``step = sync.handle(store, answer)``, apply ``step.apply``, stop when ``step.reply`` is None,
    else ``msg = step.reply``. Responder: ``step = sync.handle(store, msg)``, apply
    ``step.apply``, answer ``step.reply or DONE``. Every malformed message raises ValueError.
    """

    def __init__(self, nbuckets: int = NBUCKETS, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if nbuckets < 1 or max_entries < 1:
            raise ValueError("nbuckets and max_entries must be >= 1")
        self.nbuckets = nbuckets
        self.max_entries = max_entries

    # -- messages we send ------------------------------------------------------------------

    def open(self, store: ManifestStore, *, full: bool = False) -> dict[str, Any]:
        """First message. Root only (16 B) is cheap when nodes usually agree; ``full`` saves
        one round trip when they probably differ (e.g. after a rejoin)."""
        d = store.digest()
        msg: dict[str, Any] = {
            "type": "manifest-digest",
            "nbuckets": self.nbuckets,
            "root": d.root(),
        }
        if full:
            msg["buckets"] = d.digest()
        return msg

    def _subdigest_msg(self, store: ManifestStore, todo: Sequence[int]) -> dict[str, Any]:
        """The sub-bucket hashes of a batch of differing buckets taken from ``todo``."""
        batch, rest = list(todo[:SUBDIGEST_BATCH]), list(todo[SUBDIGEST_BATCH:])
        subs = [self._sub_digest(store, b) for b in batch]
        return {"type": "manifest-subdigest", "buckets": batch, "pending": rest, "subs": subs}

    def _sub_digest(self, store: ManifestStore, bucket: int) -> list[bytes]:
        hashes = getattr(store, "hashes_in_bucket", None)
        if hashes is not None:
            return sub_digest_of_hashes(hashes(bucket), self.nbuckets)
        return sub_digest(store.entries_in_bucket(bucket), self.nbuckets)

    def _entries_msg(
        self,
        store: ManifestStore,
        todo: Sequence[int],
        subs: Sequence[Sequence[int]] | None = None,
        pending: Sequence[int] = (),
    ) -> dict[str, Any]:
        """Our entries for a batch of units taken from ``todo``: whole buckets, or only the
        sub-buckets ``subs[i]`` of bucket ``todo[i]``. Units that do not fit the batch go back
        to ``pending`` as whole buckets (their sub-buckets are compared again later)."""
        buckets: list[int] = []
        chosen: list[list[int]] = []
        entries: list[dict[str, Any]] = []
        for i, b in enumerate(todo):
            wanted = None if subs is None else set(subs[i])
            batch = [
                e.to_wire() for e in store.entries_in_bucket(b)
                if wanted is None or slot_of(e.key, self.nbuckets)[1] in wanted
            ]  # fmt: skip
            if buckets and len(entries) + len(batch) > self.max_entries:
                msg = self._batch("manifest-entries", buckets, [*todo[i:], *pending], entries)
                return msg if subs is None else {**msg, "subs": chosen}
            buckets.append(b)
            if subs is not None:
                chosen.append(sorted(subs[i]))
            entries.extend(batch)
        msg = self._batch("manifest-entries", buckets, list(pending), entries)
        return msg if subs is None else {**msg, "subs": chosen}

    @staticmethod
    def _batch(
        kind: str, buckets: list[int], pending: list[int], entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {"type": kind, "buckets": buckets, "pending": pending, "entries": entries}

    # -- messages we receive ---------------------------------------------------------------

    def handle(self, store: ManifestStore, msg: object) -> SyncStep:
        """Process one peer message; return the reply and the entries to apply."""
        t = _msg_type(msg)
        assert isinstance(msg, Mapping)
        if t == "manifest-digest":
            return self._on_digest(store, msg)
        if t == "manifest-subdigest":
            return self._on_subdigest(store, msg)
        if t == "manifest-entries":
            return self._on_entries(store, msg)
        if t == "manifest-push":
            return self._on_push(store, msg)
        if t == "manifest-done":
            return SyncStep(None)
        raise ValueError(f"unknown sync message type {t[:40]!r}")

    def _on_digest(self, store: ManifestStore, msg: Mapping[Any, Any]) -> SyncStep:
        n = msg.get("nbuckets")
        if type(n) is not int or n != self.nbuckets:
            raise ValueError(f"nbuckets mismatch: peer {str(n)[:20]!r}, ours {self.nbuckets}")
        root = msg.get("root")
        if not isinstance(root, bytes) or len(root) != HASH_BYTES:
            raise ValueError("digest root must be 16 bytes")
        buckets = msg.get("buckets")
        d = store.digest()
        if buckets is None:
            if root == d.root():
                return SyncStep(dict(DONE))
            return SyncStep(self.open(store, full=True))
        if not isinstance(buckets, list | tuple) or len(buckets) != self.nbuckets:
            raise ValueError(f"digest buckets must be a list of {self.nbuckets} hashes")
        if not all(isinstance(b, bytes) and len(b) == HASH_BYTES for b in buckets):
            raise ValueError("digest buckets must be 16-byte hashes")
        diff = differing_buckets(d.digest(), buckets)
        if not diff:
            return SyncStep(dict(DONE))
        return SyncStep(self._subdigest_msg(store, diff))

    def _on_subdigest(self, store: ManifestStore, msg: Mapping[Any, Any]) -> SyncStep:
        buckets, pending = self._bucket_list(msg, "buckets"), self._bucket_list(msg, "pending")
        if set(buckets) & set(pending):
            raise ValueError("a bucket is both sent and pending")
        subs = msg.get("subs")
        if not isinstance(subs, list | tuple) or len(subs) != len(buckets):
            raise ValueError("subs must hold one list of hashes per bucket")
        todo: list[int] = []
        units: list[list[int]] = []
        for b, theirs in zip(buckets, subs, strict=True):
            if not isinstance(theirs, list | tuple) or len(theirs) != NSUBS:
                raise ValueError(f"each bucket needs {NSUBS} sub-bucket hashes")
            if not all(isinstance(h, bytes) and len(h) == HASH_BYTES for h in theirs):
                raise ValueError("sub-bucket hashes must be 16 bytes")
            mine = self._sub_digest(store, b)
            differ = [i for i in range(NSUBS) if mine[i] != theirs[i]]
            if differ:
                todo.append(b)
                units.append(differ)
        if todo:
            return SyncStep(self._entries_msg(store, todo, units, pending))
        if pending:
            return SyncStep(self._subdigest_msg(store, pending))
        return SyncStep(dict(DONE))

    def _bucket_list(self, msg: Mapping[Any, Any], name: str) -> list[int]:
        v = msg.get(name)
        if not isinstance(v, list | tuple):
            raise ValueError(f"{name} must be a list of bucket numbers")
        for b in v:
            if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < self.nbuckets:
                raise ValueError(f"{name}: bucket numbers must be in [0, {self.nbuckets})")
        if len(set(v)) != len(v):
            raise ValueError(f"{name}: duplicate bucket numbers")
        return list(v)

    def _parse_batch(
        self, msg: Mapping[Any, Any]
    ) -> tuple[list[int], list[int], dict[int, set[int] | None], dict[str, ManifestEntry]]:
        """Buckets, pending, the units sent ({bucket: sub-buckets, None = all}), the entries."""
        buckets, pending = self._bucket_list(msg, "buckets"), self._bucket_list(msg, "pending")
        if set(buckets) & set(pending):
            raise ValueError("a bucket is both sent and pending")
        subs = msg.get("subs")
        units: dict[int, set[int] | None] = dict.fromkeys(buckets)
        if subs is not None:
            if not isinstance(subs, list | tuple) or len(subs) != len(buckets):
                raise ValueError("subs must hold one list of sub-bucket numbers per bucket")
            for b, ss in zip(buckets, subs, strict=True):
                if not isinstance(ss, list | tuple) or not all(
                    isinstance(x, int) and not isinstance(x, bool) and 0 <= x < NSUBS for x in ss
                ):
                    raise ValueError(f"sub-bucket numbers must be in [0, {NSUBS})")
                units[b] = set(ss)
        raw = msg.get("entries")
        if not isinstance(raw, list | tuple):
            raise ValueError("entries must be a list")
        entries: dict[str, ManifestEntry] = {}
        for obj in raw:
            e = ManifestEntry.from_wire(obj)
            bucket, sub = slot_of(e.key, self.nbuckets)
            if bucket not in units or (units[bucket] is not None and sub not in units[bucket]):  # type: ignore[operator]
                raise ValueError(f"entry {e.key[:80]!r} is outside the buckets sent")
            if e.key in entries:
                raise ValueError(f"duplicate entry for key {e.key[:80]!r}")
            entries[e.key] = e
        return buckets, pending, units, entries

    def _on_entries(self, store: ManifestStore, msg: Mapping[Any, Any]) -> SyncStep:
        buckets, pending, units, theirs = self._parse_batch(msg)
        apply = [e for e in theirs.values() if newer(store.get(e.key), e)]
        push: list[dict[str, Any]] = []
        for b in buckets:
            wanted = units[b]
            for mine in store.entries_in_bucket(b):
                if wanted is not None and slot_of(mine.key, self.nbuckets)[1] not in wanted:
                    continue
                if newer(theirs.get(mine.key), mine):
                    push.append(mine.to_wire())
        pushed = {"type": "manifest-push", "buckets": buckets, "pending": pending, "entries": push}
        if "subs" in msg:
            pushed["subs"] = [sorted(units[b] or ()) for b in buckets]
        return SyncStep(pushed, apply)

    def _on_push(self, store: ManifestStore, msg: Mapping[Any, Any]) -> SyncStep:
        _, pending, _, theirs = self._parse_batch(msg)
        apply = [e for e in theirs.values() if newer(store.get(e.key), e)]
        reply = self._subdigest_msg(store, pending) if pending else None
        return SyncStep(reply, apply)


@dataclass
class ExchangeStats:
    """What one in-process exchange cost: message count, entries and buckets shipped."""

    messages: int = 0
    entries_sent: int = 0
    buckets_with_entries: set[int] = field(default_factory=set)
    applied_a: int = 0
    applied_b: int = 0


def run_exchange(
    sync: ManifestSync,
    a: ManifestStore,
    b: ManifestStore,
    apply_a: Callable[[ManifestEntry], object],
    apply_b: Callable[[ManifestEntry], object],
    *,
    full: bool = False,
    max_messages: int = 10_000,
    transport: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> ExchangeStats:
    """Drive one complete exchange between two in-process stores (a initiates).

    This is exactly the loop a node shell runs, with the network replaced by a function call,
    for unit tests and the simulator. ``transport`` (optional) may transform each message, e.g.
    a msgpack round trip.
    """
    stats = ExchangeStats()
    wire = transport or (lambda m: m)

    def count(m: dict[str, Any]) -> dict[str, Any]:
        stats.messages += 1
        for e in m.get("entries", ()):
            stats.entries_sent += 1
            stats.buckets_with_entries.add(bucket_of(e["key"], sync.nbuckets))
        return wire(m)

    msg: dict[str, Any] | None = sync.open(a, full=full)
    while msg is not None:
        if stats.messages >= max_messages:
            raise RuntimeError("exchange did not terminate")
        step_b = sync.handle(b, count(msg))
        for e in step_b.apply:
            stats.applied_b += bool(apply_b(e))
        answer = count(step_b.reply if step_b.reply is not None else dict(DONE))
        step_a = sync.handle(a, answer)
        for e in step_a.apply:
            stats.applied_a += bool(apply_a(e))
        msg = step_a.reply
    return stats
