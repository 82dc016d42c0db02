"""The replica's role: what another node's coordinator asks of this node's store.

Writes are two-phase so that nothing half-received ever becomes visible: a replica first
*stages* the streamed body (chunk files fsynced under tmp/), then *commits* it (promotes the
chunks, applies the manifest entry, fsyncs) once the coordinator saw that every staged copy
agrees, or drops it on *abort*. Small files arrive whole with their entry and commit in one
step. The internal endpoints (api/internal.py) call these methods; the coordinator calls them
directly for its own copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..config import NodeConfig
from ..core.hlc import HybridLogicalClock, check_not_ahead
from ..core.manifest import ManifestEntry
from ..errors import BadRequest, NotFound
from ..storage.chunks import Body, body_size, pieces_of, sha256_of
from ..storage.store import SMALL_CHUNK, LocalStore, StoredBlob

STAGE_TTL = 600.0  # seconds a staged upload waits for its commit before it is dropped
EXPIRY_CHECK = 30.0


@dataclass
class Staged:
    blob: StoredBlob
    expires: float


def view_of(entry: ManifestEntry | None, complete: bool) -> dict[str, Any]:
    """A node's answer about one key: its entry (wire form) and whether every chunk is here."""
    return {"entry": entry.to_wire() if entry else None, "complete": complete}


def write_checked(store: LocalStore, data: Body, sha: str, hashed: bool, cached: bool = True) -> bytes:
    """Write one chunk file durably after checking ``data`` (a buffer or its pieces) hashes to
    ``sha`` (unless ``hashed``: computed from these bytes by this process); its read sum."""
    if not hashed and sha256_of(data) != sha:
        raise BadRequest("entry does not match the data sent with it")
    return store.write_verified_file(data, sha, cached)


def not_ahead(entry: ManifestEntry) -> None:
    """Refuse an entry whose version runs ahead of this node's clock by more than clock skew."""
    try:
        check_not_ahead(entry.version, int(time.time() * 1000))
    except ValueError as exc:
        raise BadRequest(f"refused: {exc}") from None


class Replica:
    """This node as one of a key's replicas: staged uploads, commits, aborts, its local view."""

    def __init__(self, store: LocalStore, clock: HybridLogicalClock, config: NodeConfig) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.staged: dict[str, Staged] = {}

    def keep_cached(self, own: bool) -> bool:
        """Whether chunk files written for a write stay in the page cache: the coordinator's own
        copy does (reads of a new file mostly come through it); with ``--cache-written
        gateway`` (the default) the other replicas' copies leave it once fsynced."""
        return own or self.config.cache_written == "all"

    async def stage(self, upload: str, body: AsyncIterator[bytes], own: bool = False) -> dict[str, Any]:
        """Stage an upload here; ``own``: this node is its coordinator (else a peer sent it).
        Only the chunks are hashed (they name themselves); the coordinator hashes the whole file
        once, as it streams the body to every replica."""
        blob = await self.store.write_stream(
            body, None, self.config.max_upload_bytes, whole_hash=False, cached=self.keep_cached(own)
        )
        self.staged[upload] = Staged(blob, time.monotonic() + STAGE_TTL)
        return {"size": blob.size, "sha256": blob.sha256, "chunks": list(blob.chunks)}

    async def commit(self, upload: str | None, entry: ManifestEntry) -> bool:
        """Make a staged upload (or a tombstone: no upload) the key's entry, if it is newer."""
        blob = None
        if upload is not None:
            staged = self.staged.pop(upload, None)
            if staged is None:
                raise NotFound("no such staged upload (expired or aborted)")
            blob = staged.blob
            hash_differs = blob.sha256 is not None and blob.sha256 != entry.sha256
            if blob.size != entry.size or blob.chunks != entry.chunks or hash_differs:
                await self.store.discard(blob)
                raise BadRequest("entry does not match the staged upload")
        try:
            not_ahead(entry)
        except BadRequest:
            if blob is not None:
                await self.store.discard(blob)
            raise
        self.clock.observe(entry.version)
        return await self.store.commit(blob, entry)

    async def commit_small(self, entry: ManifestEntry, body: Body, hashed: bool = False) -> bool:
        """One-phase write of a small file: the bytes (one buffer, or the pieces they arrived
        in: a chunk file is written from those without joining them) arrive with their entry.

        ``hashed``: this process computed ``entry.sha256`` from these very bytes (the
        coordinator's own replica), so they are not hashed again; bytes from a peer always are.
        """
        size = body_size(body)
        chunks = (entry.sha256,) if size else ()
        if entry.deleted or entry.size != size or entry.chunks != chunks:
            raise BadRequest("entry does not match the data sent with it")
        not_ahead(entry)
        store = self.store
        store.check_space(size)
        if size > SMALL_CHUNK:  # one chunk file, written durably before the entry commits
            async with store.gc_lock.shared():
                # Hashed in the I/O thread with the write: 0.7 ms per MiB off the event loop.
                cached = self.keep_cached(hashed)  # hashed here: the coordinator's own copy
                fast = await store.in_io(write_checked, store, body, entry.sha256, hashed, cached)
                self.clock.observe(entry.version)
                return bool(await store.apply_entries([entry], sums={entry.sha256: fast}))
        data = b"".join(pieces_of(body))  # at most SMALL_CHUNK: stored in its entry's row
        if not hashed and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BadRequest("entry does not match the data sent with it")
        self.clock.observe(entry.version)
        blob = StoredBlob(len(data), entry.sha256, chunks, store.chunks.tmp_dir / "unused", data or None)
        return await store.commit(blob if data else None, entry)

    async def abort(self, upload: str) -> None:
        staged = self.staged.pop(upload, None)
        if staged is not None:
            await self.store.discard(staged.blob)

    async def abort_all(self) -> None:
        """At shutdown: no coordinator can commit these any more."""
        for upload in list(self.staged):
            await self.abort(upload)

    async def expire_staged_loop(self) -> None:
        """Drop uploads whose coordinator never came back to commit or abort them."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK)
            now = time.monotonic()
            for upload in [u for u, s in self.staged.items() if s.expires < now]:
                await self.abort(upload)

    def local_view(self, key: str) -> dict[str, Any]:
        """What this node holds for ``key``: its entry and whether every chunk is present."""
        return view_of(*self.store.get_with_presence(key))

    async def purge(self, tombstones: list[Any]) -> int:
        """Forget tombstones the leader found confirmed everywhere (ValueError: not tombstones)."""
        entries = [ManifestEntry.from_wire(t) for t in tombstones]
        if not all(e.deleted for e in entries):
            raise ValueError("only tombstones can be purged")
        return await self.store.purge_tombstones(entries)
