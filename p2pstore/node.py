"""The node: one process's identity, clock and store, and the file operations the API exposes.

The HTTP layer only parses requests and formats responses; what a PUT, GET or DELETE *means*
lives here, so the replication layer can take over these operations without touching the API.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .config import NodeConfig
from .core.hlc import HybridLogicalClock
from .core.manifest import ManifestEntry
from .errors import NotFound
from .storage.store import LocalStore, StoredBlob

log = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"


def load_node_id(data_dir: Path) -> str:
    """Read this node's stable id, creating it (durably) on first start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / NODE_ID_FILE
    if path.exists():
        node_id = path.read_text().strip()
        if node_id:
            return node_id
    node_id = "n" + uuid.uuid4().hex[:11]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    tmp.replace(path)
    return node_id


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class WriteResult:
    entry: ManifestEntry
    replicas: list[str]


class Node:
    """A storage node; later issues add membership, election and replication around it."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node_id = load_node_id(config.data_dir)
        self.clock = HybridLogicalClock(self.node_id)
        self.store = LocalStore(
            config.data_dir, config.chunk_size, config.fsync, config.min_free_bytes
        )
        self.started = time.time()

    def close(self) -> None:
        self.store.close()

    def new_version(self) -> str:
        return self.clock.now(wall_ms())

    # ---- file operations ----
    async def put(
        self,
        key: str,
        body: AsyncIterator[bytes],
        content_type: str,
        expected_sha: str | None = None,
        expected_size: int | None = None,
    ) -> WriteResult:
        """Store a streamed body under ``key``; visible only once complete and durable."""
        blob = await self.store.write_stream(
            body, expected_sha, self.config.max_upload_bytes, expected_size
        )
        return await self.commit_blob(key, blob, content_type)

    async def commit_blob(self, key: str, blob: StoredBlob, content_type: str) -> WriteResult:
        """Give a staged blob a fresh version under ``key`` and make it visible."""
        entry = ManifestEntry(
            key=key,
            version=self.new_version(),
            size=blob.size,
            sha256=blob.sha256,
            chunks=blob.chunks,
            content_type=content_type,
            deleted=False,
            modified=time.time(),
        )
        await self.store.commit(blob, entry)
        return WriteResult(entry, [self.node_id])

    async def delete(self, key: str) -> WriteResult:
        current = self.store.get(key)
        if current is None or current.deleted:
            raise NotFound(f"key not found: {key}")
        entry = ManifestEntry.tombstone(key, self.new_version(), time.time())
        await self.store.commit(None, entry)
        return WriteResult(entry, [self.node_id])

    def lookup(self, key: str) -> ManifestEntry:
        entry = self.store.get(key)
        if entry is None or entry.deleted:
            raise NotFound(f"key not found: {key}")
        return entry

    async def read_range(self, entry: ManifestEntry, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield verified bytes [start, end) of ``entry``; raises CorruptData rather than lie."""
        offset = 0
        for sha in entry.chunks:
            if offset < start:
                length = self.store.chunks.length(sha)
                if length is not None and offset + length <= start:
                    offset += length  # skip whole chunks before the range without reading them
                    continue
            data = await self.store.read_chunk(sha)
            chunk_end = offset + len(data)
            if chunk_end > start and offset < end:
                yield data[max(0, start - offset) : min(len(data), end - offset)]
            offset = chunk_end
            if offset >= end:
                break

    def list(self, prefix: str, after: str, limit: int) -> list[ManifestEntry]:
        return self.store.db.list(prefix, after, limit)

    async def checkpoint_all(self) -> list[dict]:
        """Checkpoint this node (the cluster layer extends this to every live node)."""
        try:
            result = await self.store.checkpoint(self.config.checkpoint_keep)
            return [{"node_id": self.node_id, "ok": True, **result, "error": None}]
        except Exception as exc:  # reported per node, not raised: others may have succeeded
            log.exception("checkpoint failed")
            return [{"node_id": self.node_id, "ok": False, "checkpoint": None, "error": str(exc)}]

    def status(self) -> dict:
        counts = self.store.db.counts()
        return {
            "node_id": self.node_id,
            "address": self.config.advertise_address,
            "url": self.config.url,
            "version": __version__,
            "uptime": round(time.time() - self.started, 3),
            **counts,
            "disk": self.store.chunks.disk_usage(),
            "storage": {
                "corrupt_chunks_found": self.store.stats.corrupt_chunks_found,
                "missing_chunks_at_start": self.store.stats.missing_chunks_at_start,
                "restored_from_checkpoint": self.store.stats.restored_from,
                "last_checkpoint": self.store.stats.last_checkpoint,
            },
        }
