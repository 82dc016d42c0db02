"""Telling the members that hold no replica of a key about its new entry, right after a write.

Every node keeps the whole manifest (listings and lookups of keys are answered from it), but a
write reaches only the key's R replicas and its gateway. In a cluster larger than R the other
members learnt the new entry from manifest anti-entropy alone, which runs only every 15 s while
clients are served: ``ls`` through such a member missed files written seconds before, and the
manifest exchange a new read lease needs had hundreds of entries to bring in (docs/benchmarks.md,
six nodes). So the gateway announces each acknowledged entry to the live members outside its
replica set: batched per member (one message per ``ANNOUNCE_WINDOW``), bounded (an unreachable
member's queue stops at ``MAX_PENDING``; the rest is left to anti-entropy, as is everything when
a member is down or runs an older version without the method). Best effort only: nothing
depends on an announcement arriving, anti-entropy still converges every manifest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .transport import PeerError

if TYPE_CHECKING:
    from ..core.manifest import ManifestEntry
    from .replication import Cluster

log = logging.getLogger("p2pstore.announce")

ANNOUNCE_WINDOW = 0.2  # seconds: entries of the writes in this window go in one message per member
# (each message is a commit on the receiver: at 0.05 s, six nodes' PUTs cost 15 % more CPU)
MAX_PENDING = 10_000  # entries queued for one member; beyond, anti-entropy brings them
MAX_BATCH = 1_000  # entries per message (the receiver takes up to MAX_KEYS_PER_LOOKUP)
ANNOUNCE_TIMEOUT = 5.0


class EntryAnnouncer:
    """Queues new entries per member outside their replica set and sends them in batches."""

    def __init__(self, cluster: Cluster, spawn: Callable[[Any], asyncio.Task]) -> None:
        self.cluster = cluster
        self._spawn = spawn
        self.pending: dict[str, list[dict]] = {}  # member address -> entries (wire form)
        self._flushing: asyncio.Task | None = None
        self.sent = 0  # entries delivered to members outside their replica set
        self.dropped = 0  # entries not queued (a member's queue full) or not delivered
        self.received = 0  # announced entries this node applied (they were news here)

    def announce(self, entry: ManifestEntry, replicas: Iterable[str]) -> None:
        """Queue ``entry`` for every live member other than this node and ``replicas``."""
        skip = {*replicas, self.cluster.node.node_id}
        members = [m for m in self.cluster.gossip.live_peers() if m.id not in skip]
        if not members:
            return
        wire = entry.to_wire()
        for member in members:
            queue = self.pending.setdefault(member.address, [])
            if len(queue) >= MAX_PENDING:
                self.dropped += 1
                continue
            queue.append(wire)
        if self._flushing is None:
            self._flushing = self._spawn(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(ANNOUNCE_WINDOW)
        finally:
            self._flushing = None
        pending, self.pending = self.pending, {}
        await asyncio.gather(*(self._send(address, wires) for address, wires in pending.items()))

    async def _send(self, address: str, wires: list[dict]) -> None:
        for at in range(0, len(wires), MAX_BATCH):
            batch = wires[at : at + MAX_BATCH]
            try:
                await self.cluster.transport.call(
                    address, "/announce", {"entries": batch}, timeout=ANNOUNCE_TIMEOUT
                )
            except PeerError as exc:  # down, slow, or older: anti-entropy brings these
                self.dropped += len(wires) - at
                log.debug("announcing %d entries to %s failed: %s", len(wires) - at, address, exc)
                return
            self.sent += len(batch)

    def stats(self) -> dict[str, int]:
        queued = sum(map(len, self.pending.values()))
        return {"sent": self.sent, "received": self.received, "dropped": self.dropped, "queued": queued}
