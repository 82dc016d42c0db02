"""Versioning of folders (an S3 bucket is a top-level folder): each folder's setting, the
marks a write in it carries, and the operations on a key's versions (list, read, remove,
restore) through the coordinator.

A folder's setting is an empty entry ``.p2pstore/versioning/<folder>`` whose meta holds
``status`` (Enabled or Suspended; no entry: never versioned) and ``lifecycle`` (the folder's
lifecycle rules, JSON). It lives in meta so that every node reads it from its own manifest (every
node holds the whole manifest, only the replicas hold a file's bytes): a write looks it up in a
local SQLite read, no network round trip. Keys outside any folder are never versioned.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..core.keys import is_reserved
from ..core.manifest import ManifestEntry
from ..core.versions import (
    KEEP,
    NULL,
    VERSIONS_PREFIX,
    VID,
    base_of,
    is_kept,
    version_id,
    version_key,
    versions_prefix,
)
from ..errors import BadRequest, NotFound, StoreError
from ..storage.store import SMALL_CHUNK, LocalStore

SETTINGS_PREFIX = ".p2pstore/versioning/"
STATUSES = ("Enabled", "Suspended")
NULL_MARK = ("p2p:null", "1")  # written while versioning is suspended: the "null" version
LIST_PAGE = 5000


def folder_of(key: str) -> str | None:
    folder, sep, _ = key.partition("/")
    return folder if sep and not is_reserved(key) else None


def settings(store: LocalStore, folder: str) -> dict[str, str]:
    """The folder's setting as this node's manifest holds it ({} when never set)."""
    entry = store.get(SETTINGS_PREFIX + folder)
    return {} if entry is None or entry.deleted else dict(entry.meta)


def status(store: LocalStore, key: str) -> str:
    """Enabled, Suspended or Off for the folder of ``key``."""
    folder = folder_of(key)
    return settings(store, folder).get("status", "Off") if folder else "Off"


def with_marks(
    store: LocalStore, key: str, pairs: tuple[tuple[str, str], ...], tombstone: bool
) -> tuple[tuple[str, str], ...]:
    """The meta a new write of ``key`` carries: the keep mark in an Enabled folder, a null
    delete marker's mark in a Suspended one; user meta never carries the store's marks but the
    version id a restore passes on."""
    if tombstone and ("p2p:removed", "1") in pairs:
        return ()  # a version removed for good: a plain tombstone, no marker
    state = status(store, key)
    meta = {k: v for k, v in pairs if not k.startswith("p2p:") or k == VID}
    if state == "Enabled":
        meta[KEEP] = "1"
    else:
        meta.pop(VID, None)
        if state == "Suspended":
            meta[NULL_MARK[0]] = NULL_MARK[1]
    if tombstone:
        meta = {k: v for k, v in meta.items() if k.startswith("p2p:")}
    return tuple(sorted(meta.items()))


def is_marker(entry: ManifestEntry) -> bool:
    """A tombstone that is a delete marker (shown in version listings), not a removal."""
    return entry.deleted and bool(entry.meta)


def versions_of(store: LocalStore, key: str) -> list[ManifestEntry]:
    """Every version of ``key`` this node's manifest holds, newest first: the current entry
    (a delete marker included) then the kept ones (removed versions left out)."""
    found: list[ManifestEntry] = []
    current = store.get(key)
    if current is not None and (not current.deleted or is_marker(current)):
        found.append(current)
    prefix, after = versions_prefix(key), ""
    while True:
        page = store.db.list(prefix, after, LIST_PAGE, include_deleted=True)
        found.extend(e for e in page if base_of(e.key) == key and (not e.deleted or is_marker(e)))
        if len(page) < LIST_PAGE:
            break
        after = page[-1].key
    found.sort(key=lambda e: e.version, reverse=True)
    return found


def has_versions(store: LocalStore, bucket: str) -> bool:
    """Whether the bucket holds kept versions or delete markers (DeleteBucket needs none)."""
    for prefix in (VERSIONS_PREFIX + bucket + "/", bucket + "/"):
        after = ""
        while True:
            page = store.db.list(prefix, after, 1000, include_deleted=True)
            if any(not e.deleted or is_marker(e) for e in page):
                return True
            if len(page) < 1000:
                break
            after = page[-1].key
    return False


def find(store: LocalStore, key: str, vid: str) -> tuple[ManifestEntry, list[ManifestEntry]]:
    """The version ``vid`` of ``key`` and all of them (newest first); NotFound when absent."""
    versions = versions_of(store, key)
    for e in versions:
        if version_id(e) == vid:
            return e, versions
    raise NotFound(f"no version {vid[:80]!r} of {key[:200]!r}", {"key": key, "version": vid})


def describe(entry: ManifestEntry, latest: bool) -> dict[str, Any]:
    """A version as the native API lists it."""
    return {
        "version": version_id(entry),
        "latest": latest,
        "delete_marker": entry.deleted,
        "size": entry.size,
        "sha256": entry.sha256,
        "modified": entry.modified,
        "content_type": entry.content_type,
    }


class VersionOps:
    """Reading, removing and restoring versions through the coordinator (any node)."""

    def __init__(self, store: LocalStore, reads: Any, writes: Any, composer: Any = None) -> None:
        self.store = store
        self.reads = reads
        self.writes = writes
        self.composer = composer  # cluster/compose.Composer: restores by reference
        # the leader's lifecycle runner (s3/lifecycle.py) counts its progress here: /status, /metrics
        self.lifecycle = dict.fromkeys(
            ("rounds", "keys_scanned", "objects_expired", "versions_removed", "uploads_aborted"), 0
        )

    async def set_settings(self, folder: str, **values: str | None) -> dict[str, str]:
        """Change the folder's setting (``None`` removes a field); written like any entry."""
        meta = settings(self.store, folder)
        for name, value in values.items():
            if value is None:
                meta.pop(name, None)
            else:
                meta[name] = value
        await self.writes.put(SETTINGS_PREFIX + folder, _empty(), "application/json", None, 0, meta=meta)
        return meta

    async def forget(self, folder: str) -> None:
        """Drop the folder's setting (its bucket was deleted)."""
        if settings(self.store, folder):
            await self.writes.write(SETTINGS_PREFIX + folder, None, "", None, None, None, tombstone=True)

    async def find(self, key: str, vid: str) -> tuple[ManifestEntry, list[ManifestEntry]]:
        """:func:`find`, after catching up when this node's manifest lacks the version (a
        write through another node not announced here yet, or a version kept while this node
        was away): a quorum read of the key, then of the version's own key, brings them here."""
        for lookup in (key, version_key(key, vid)):
            try:
                return find(self.store, key, vid)
            except NotFound:
                with contextlib.suppress(StoreError, ValueError):
                    await self.reads.resolve(lookup)
        return find(self.store, key, vid)

    async def resolve(self, key: str, vid: str) -> Any:
        """The verified-readable version ``vid`` of ``key`` (a Resolved); NotFound when absent,
        BadRequest (MethodNotAllowed for S3) when it is a delete marker."""
        entry, _ = await self.find(key, vid)
        if entry.deleted:
            msg = f"version {vid[:80]!r} of {key[:200]!r} is a delete marker"
            raise BadRequest(msg, {"delete_marker": True})
        resolved = await self.reads.resolve(entry.key)
        if version_id(resolved.entry) != vid:  # moved since: the current one became a kept one
            entry, _ = await self.find(key, vid)
            resolved = await self.reads.resolve(entry.key)
        return resolved

    async def remove(self, key: str, vid: str) -> ManifestEntry:
        """Delete version ``vid`` for good. Removing the current one (a delete marker included)
        makes the next newest version current again, with its own version id."""
        entry, versions = await self.find(key, vid)
        if entry.key != key:
            await self._tombstone(entry.key)
            return entry
        rest = [e for e in versions if e is not entry]
        if rest:
            await self._promote(key, rest[0])
            await self._tombstone(versions_key(entry))
        else:
            removed = {"p2p:removed": "1"}
            await self.writes.write(key, None, "", None, None, None, tombstone=True, meta=removed)
        return entry

    async def restore(self, key: str, vid: str) -> ManifestEntry:
        """Make version ``vid`` current again (same version id); the current one is kept."""
        entry, _ = await self.find(key, vid)
        if entry.key == key:
            return entry  # already current
        await self._promote(key, entry)
        return entry

    async def _promote(self, key: str, entry: ManifestEntry) -> None:
        """Write ``entry``'s content (or marker) as ``key``'s current version, keeping its id,
        then remove its kept copy."""
        meta = {k: v for k, v in entry.meta if k != KEEP}
        meta[VID] = version_id(entry) if is_kept(entry) or VID in meta else NULL
        if entry.deleted:
            await self.writes.write(key, None, "", None, None, None, tombstone=True, meta=meta)
        else:
            resolved = await self.reads.resolve(entry.key)
            refs = self.composer.refs(resolved) if self.composer and entry.size > SMALL_CHUNK else None
            if refs:  # a commit by reference to the version's own chunks: no byte moves
                await self.composer.compose(key, refs, entry.content_type, meta)
            else:  # a small file's bytes are inline in its row (or its chunk lengths unknown here)
                body = self.reads.read_range(resolved, 0, entry.size)
                meta.pop("md5", None)
                md5 = dict(entry.meta).get("md5")
                await self.writes.put(
                    key, body, entry.content_type, entry.sha256, entry.size, meta=meta, md5=md5 is not None
                )
        if entry.key != key:
            await self._tombstone(entry.key)

    async def _tombstone(self, key: str) -> None:
        await self.writes.write(key, None, "", None, None, None, tombstone=True)


def versions_key(entry: ManifestEntry) -> str:
    return version_key(entry.key, entry.version)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""


def lifecycle_rules(store: LocalStore, folder: str) -> list[dict[str, Any]]:
    raw = settings(store, folder).get("lifecycle")
    return json.loads(raw) if raw else []


def now() -> float:
    return time.time()
