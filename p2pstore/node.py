"""The node: one process's identity, clock and store, and the file operations the API exposes.

The HTTP layer only parses requests and formats responses; what a PUT, GET or DELETE *means*
lives here, so the replication layer can take over these operations without touching the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__
from .cluster.replication import Cluster, Resolved
from .config import NodeConfig
from .core.hlc import HybridLogicalClock
from .core.manifest import ManifestEntry
from .errors import NotFound
from .storage.store import LocalStore

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
    """A storage node: identity, clock and local store, plus the cluster it belongs to."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node_id = load_node_id(config.data_dir)
        self.clock = HybridLogicalClock(self.node_id)
        self.last_client_request = 0.0  # monotonic; background work yields while clients are active
        self.store = LocalStore(config.data_dir, config.chunk_size, config.fsync, config.min_free_bytes)
        self.started = time.time()
        self.cluster = Cluster(self)

    def start(self) -> None:
        """Start background work (needs the running event loop)."""
        self.cluster.start()

    async def stop(self) -> None:
        await self.cluster.stop()

    def close(self) -> None:
        self.store.close()

    def new_version(self) -> str:
        return self.clock.now(wall_ms())

    # ---- file operations (any node is a gateway) ----
    async def put(
        self,
        key: str,
        body: AsyncIterator[bytes],
        content_type: str,
        expected_sha: str | None = None,
        expected_size: int | None = None,
        w: int | None = None,
    ) -> WriteResult:
        """Store a streamed body under ``key`` on its replicas; visible once W have it durably."""
        entry, holders = await self.cluster.write(
            key, body, content_type, expected_sha, expected_size, w or self.config.write_quorum
        )
        return WriteResult(entry, holders)

    async def delete(self, key: str, w: int | None = None) -> WriteResult:
        await self.cluster.resolve(key)  # 404 when there is nothing to delete
        entry, holders = await self.cluster.write(
            key, None, "", None, None, w or self.config.write_quorum, tombstone=True
        )
        return WriteResult(entry, holders)

    def serving_clients(self, within: float = 1.0) -> bool:
        """True while client requests keep arriving (background work slows down then)."""
        return time.monotonic() - self.last_client_request < within

    async def lookup(self, key: str, r: int | None = None) -> Resolved:
        """The newest version among a read quorum of replicas (``r`` of them if given)."""
        return await self.cluster.resolve(key, r)

    def lookup_local(self, key: str) -> Resolved:
        """This node's own complete copy, or NotFound (``?local=1``)."""
        entry = self.store.get(key)
        if entry is None or entry.deleted or not self.store.has_all_chunks(entry):
            raise NotFound(f"no local copy of {key} on {self.node_id}")
        return Resolved(entry, [self.node_id])

    def read_range(self, resolved: Resolved, start: int, end: int) -> AsyncIterator[bytes]:
        """Verified bytes [start, end); raises rather than serve a byte that fails its sha256."""
        return self.cluster.read_range(resolved, start, end)

    def list(self, prefix: str, after: str, limit: int) -> list[ManifestEntry]:
        return self.store.db.list(prefix, after, limit)

    async def checkpoint_local(self) -> dict:
        try:
            result = await self.store.checkpoint(self.config.checkpoint_keep)
            return {"node_id": self.node_id, "ok": True, **result, "error": None}
        except Exception as exc:  # reported per node, not raised: others may have succeeded
            log.exception("checkpoint failed")
            return {"node_id": self.node_id, "ok": False, "checkpoint": None, "error": str(exc)}

    async def checkpoint_all(self) -> list[dict]:
        """Checkpoint this node and every live peer; one result per node."""
        mine, others = await asyncio.gather(self.checkpoint_local(), self.cluster.checkpoint_peers())
        return [mine, *others]

    def status(self) -> dict:
        counts = self.store.db.counts()
        gossip = self.cluster.gossip
        return {
            "node_id": self.node_id,
            "address": self.config.advertise_address,
            "url": self.config.url,
            "version": __version__,
            "uptime": round(time.time() - self.started, 3),
            **counts,
            "disk": self.store.chunks.disk_usage(),
            "joined": gossip.membership.joined(),
            "members": gossip.members_json(),
            "leader": gossip.leader,
            "term": gossip.term,
            "is_leader": gossip.is_leader(),
            "replication": {
                "replicas": self.config.replicas,
                "write_quorum": self.config.write_quorum,
                "bad_copies_reported": self.cluster.bad_copies_reported,
                "read_repairs_pushed": self.cluster.read_repairs_pushed,
                "announced": self.cluster.announcer.stats(),
            },
            "repair": {**asdict(self.cluster.repairer.stats), **self.cluster.housekeeper.stats()},
            "scrub": {**asdict(self.cluster.scrubber.stats), "rate": self.config.scrub_rate},
            "read_leases": self.cluster.leases.stats(),
            "storage": {
                "corrupt_chunks_found": self.store.stats.corrupt_chunks_found,
                "restored_from_checkpoint": self.store.stats.restored_from,
                "last_checkpoint": self.store.stats.last_checkpoint,
            },
        }
