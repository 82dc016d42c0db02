"""One node process: its identity, clock and local store, and the cluster roles built on them.

The HTTP layer (api/) parses requests and formats answers; what a PUT, GET or DELETE means lives
in the cluster's coordinator (cluster/writes.py, cluster/reads.py), which any node runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

from .cluster.background import ClientActivity
from .cluster.cluster import Cluster
from .config import NodeConfig
from .core.hlc import HybridLogicalClock
from .core.identity import Adoption
from .core.series import Series
from .storage.store import LocalStore

log = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"


def stored_node_id(data_dir: Path) -> str | None:
    """The id this data dir already belongs to, if any."""
    path = data_dir / NODE_ID_FILE
    if path.exists():
        return path.read_text().strip() or None
    return None


def load_node_id(data_dir: Path, adopt: str | None = None) -> str:
    """Read this node's stable id, creating it (durably) on first start: ``adopt`` (a dead
    member's id, core/identity.py) or a new one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / NODE_ID_FILE
    node_id = stored_node_id(data_dir)
    if node_id:
        return node_id
    node_id = adopt or "n" + uuid.uuid4().hex[:11]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    tmp.replace(path)
    return node_id


def wall_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """A storage node: identity, clock and local store, plus the cluster roles it runs."""

    def __init__(self, config: NodeConfig, adoption: Adoption | None = None) -> None:
        self.config = config
        self.node_id = load_node_id(config.data_dir, adoption.node_id if adoption else None)
        self.clock = HybridLogicalClock(self.node_id)
        self.activity = ClientActivity()  # background work yields while clients are served
        self.store = LocalStore(config.data_dir, config.chunk_size, config.fsync, config.min_free_bytes)
        if adoption is not None and adoption.node_id == self.node_id:
            # Out-number the incarnation the cluster has for the old member (our first refutation
            # makes us alive everywhere), and abstain in the terms it may have voted in.
            self.store.db.set_states({
                "incarnation": str(adoption.incarnation).encode(),
                "term": str(adoption.term).encode(),
                "voted_for": self.node_id.encode(),
            })  # fmt: skip
        self.started = time.time()
        self.series = Series()  # per-second activity for the status page's charts (api/overview.py)
        self.cluster = Cluster(
            config, self.node_id, self.store, self.clock, self.activity.busy, self.new_version
        )

    def start(self) -> None:
        """Start background work (needs the running event loop)."""
        self.cluster.start()

    async def stop(self) -> None:
        await self.cluster.stop()

    def close(self) -> None:
        self.store.close()

    def new_version(self) -> str:
        return self.clock.now(wall_ms())

    async def checkpoint_local(self) -> dict:
        try:
            result = await self.store.checkpoint(self.config.checkpoint_keep)
            return {"node_id": self.node_id, "ok": True, **result, "error": None}
        except Exception as exc:  # reported per node, not raised: others may have succeeded
            log.exception("checkpoint failed")
            return {"node_id": self.node_id, "ok": False, "checkpoint": None, "error": str(exc)}

    async def checkpoint_all(self) -> list[dict]:
        """Checkpoint this node and every live peer; one result per node."""
        mine, others = await asyncio.gather(self.checkpoint_local(), self.cluster.admin.checkpoint_peers())
        return [mine, *others]
