"""Manifest entries, their validation, the last-writer-wins merge and the entry hash.

Sans-I/O: nothing here touches sockets, disks or clocks. Entries learned from peers are always
applied through :func:`merge` (LWW), so applying is idempotent and order-free.

Why this shape:

* **LWW by version** (an HLC string whose lexicographic order is the write order) makes the
  manifest a state-based CRDT: merge is commutative, associative and idempotent, so replicas
  converge whatever order gossip arrives in. Equal versions with different contents (only a bug
  or a forged message can cause them) are settled by comparing the whole entry, so even then
  every replica picks the same winner.
* **Entry hashes** (:func:`entry_hash`) name an entry's whole identity in 16 bytes; the Merkle
  tree that anti-entropy walks (core/merkle.py) XORs them into its leaves.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .keys import CONTROL, MAX_KEY_BYTES, validate_key

__all__ = [
    "HASH_BYTES",
    "ManifestEntry",
    "check_meta",
    "entry_hash",
    "merge",
    "meta_pairs",
    "newer",
]

HASH_BYTES = 16
"""Size of entry hashes and Merkle node hashes (128 bits: collisions are not a concern)."""
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

_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"([0-9]{13})\.([0-9]{6})\.(.*)", re.DOTALL)
_FIELDS = ("key", "version", "size", "sha256", "chunks", "content_type", "deleted", "modified")


def meta_pairs(meta: object) -> tuple[tuple[str, str], ...]:
    """Metadata from its wire form (a map, or nothing) as sorted pairs; ValueError when not a
    map of strings to strings."""
    if meta is None:
        return ()
    if type(meta) is not dict and not isinstance(meta, Mapping):  # a dict: no ABC check (every read)
        raise ValueError(f"meta must be a map, got {type(meta).__name__}")
    if len(meta) > MAX_META_ITEMS:
        raise ValueError(f"meta: more than {MAX_META_ITEMS} items")
    try:
        pairs = tuple(sorted(meta.items()))
    except TypeError:  # names of types that do not compare
        raise ValueError("meta must map strings to strings") from None
    for k, v in pairs:
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError("meta must map strings to strings")
    return pairs


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
    """16-byte hash of the entry's identity, XORed into the Merkle tree's leaves.

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
