"""Object versions as ordinary manifest entries (sans I/O).

A write to a versioned folder carries the meta mark ``p2p:keep``. When a replica's manifest
supersedes such an entry (a newer write or a delete marker wins over it, or it arrives late and
loses), the replica keeps the loser as an ordinary entry under a reserved key,
``.p2pstore/versions/<key>/<its HLC version>``, with the loser's own version. Every replica
that saw the loser derives the same entry, so the LWW merge, the Merkle tree, anti-entropy, repair and
hand-off carry versions unchanged. :func:`placement_key` maps a version key to its base key, so a
version lives on the same nodes as its key and shares its (content-addressed) chunks.

The S3 version id is ``p2p:vid`` when present (a restored version keeps the id it had), else the
entry's HLC version for a kept entry, else ``"null"`` (written while versioning was off or
suspended: the next write replaces it, as S3's null version).
"""

from __future__ import annotations

import dataclasses

from .manifest import ManifestEntry, newer

__all__ = [
    "KEEP",
    "NULL",
    "VERSIONS_PREFIX",
    "VID",
    "archive_of",
    "archived",
    "base_of",
    "is_kept",
    "placement_key",
    "version_id",
    "version_key",
    "versions_prefix",
]

VERSIONS_PREFIX = ".p2pstore/versions/"
KEEP = "p2p:keep"
VID = "p2p:vid"
NULL_MARK = "p2p:null"
NULL = "null"
MARK_PREFIX = "p2p:"
"""Meta names of the store's own marks (never shown as object metadata, never copied)."""


def version_key(key: str, version: str) -> str:
    """Where the superseded entry ``version`` of ``key`` is kept."""
    return f"{VERSIONS_PREFIX}{key}/{version}"


def versions_prefix(key: str) -> str:
    """The prefix of every kept version of ``key`` (and of keys below ``key/``: filter with
    :func:`base_of`)."""
    return f"{VERSIONS_PREFIX}{key}/"


def base_of(key: str) -> str | None:
    """The base key of a version key, None for any other key."""
    if not key.startswith(VERSIONS_PREFIX):
        return None
    base, sep, version = key[len(VERSIONS_PREFIX):].rpartition("/")
    return base if sep and base and version else None


def placement_key(key: str) -> str:
    """The key whose replicas hold ``key``: a version lives where its base key lives."""
    base = base_of(key)
    return key if base is None else base


def is_kept(entry: ManifestEntry) -> bool:
    return (KEEP, "1") in entry.meta


def version_id(entry: ManifestEntry) -> str:
    """The S3 version id of an entry (base or kept)."""
    for name, value in entry.meta:
        if name == VID:
            return value
    return entry.version if is_kept(entry) else NULL


def archived(entry: ManifestEntry) -> ManifestEntry:
    """The kept copy of a superseded entry: same content, same version, the reserved key."""
    return dataclasses.replace(entry, key=version_key(entry.key, entry.version))


def archive_of(stored: ManifestEntry | None, incoming: ManifestEntry) -> ManifestEntry | None:
    """What a replica must keep when ``incoming`` meets ``stored`` (same key): the loser of the
    LWW merge, if it is another version and not itself reserved, when it carries the keep mark
    or the winner does (a write in an Enabled folder keeps what it replaces, the "null" version
    written before versioning was enabled included; a plain tombstone is no version)."""
    if stored is None or incoming.key.startswith(".p2pstore/"):
        return None
    loser = stored if newer(stored, incoming) else incoming
    winner = incoming if loser is stored else stored
    if loser.version == winner.version:
        return None
    if is_kept(loser) or (is_kept(winner) and (not loser.deleted or loser.meta)):
        return archived(loser)
    return None


def is_null_write(entry: ManifestEntry) -> bool:
    """Written while versioning was suspended: it replaces any kept "null" version."""
    return (NULL_MARK, "1") in entry.meta
