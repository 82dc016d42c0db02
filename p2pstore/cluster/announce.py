"""Telling the members that hold no replica of a key about its new entry, right after a write.

Every node keeps the whole manifest (listings and lookups of keys are answered from it), but a
write reaches only the key's R replicas and its gateway. In a cluster larger than R the other
members would learn the new entry from manifest anti-entropy alone, which runs only every 15 s
while clients are served: ``ls`` through such a member would miss files written seconds before,
and the manifest exchange a new read lease needs would have hundreds of entries to bring in. So
the gateway announces each acknowledged entry to the live members outside its replica set:
batched per member (one message per ``ANNOUNCE_WINDOW``), bounded (an unreachable member's
queue stops at ``MAX_PENDING``; the rest is left to anti-entropy, as is everything when a
member is down). Best effort only: nothing depends on an announcement arriving, anti-entropy
still converges every manifest.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from .transport import PeerError

if TYPE_CHECKING:
    from ..core.manifest import ManifestEntry
    from .peers import Peers

# Applies received entries here (anti-entropy's apply, only keys this node replicates fetch data)
ApplyEntries = Callable[..., Awaitable[list]]

log = logging.getLogger("p2pstore.announce")

ANNOUNCE_WINDOW = 0.2  # seconds: entries of the writes in this window go in one message per member
# (each message is a commit on the receiver: a 0.05 s window costs six nodes' PUTs 15 % more CPU)
MAX_PENDING = 10_000  # entries queued for one member; beyond, anti-entropy brings them
MAX_BATCH = 1_000  # entries per message (the receiver takes up to MAX_KEYS_PER_LOOKUP)
ANNOUNCE_TIMEOUT = 5.0


class EntryAnnouncer:
    """Queues new entries per member outside their replica set and sends them in batches."""

    def __init__(
        self, peers: Peers, spawn: Callable[[Any], asyncio.Task], apply: ApplyEntries | None = None
    ) -> None:
        self.peers = peers
        self._spawn = spawn
        self._apply = apply
        self.pending: dict[str, list[dict]] = {}  # member address -> entries (wire form)
        self._flushing: asyncio.Task | None = None
        self.sent = 0  # entries delivered to members outside their replica set
        self.dropped = 0  # entries not queued (a member's queue full) or not delivered
        self.received = 0  # announced entries this node applied (they were news here)

    def announce(self, entry: ManifestEntry, replicas: Iterable[str]) -> None:
        """Queue ``entry`` for every live member other than this node and ``replicas``."""
        skip = {*replicas, self.peers.me}
        members = [m for m in self.peers.live_peers() if m.id not in skip]
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
                await self.peers.transport.call(
                    address, "/announce", {"entries": batch}, timeout=ANNOUNCE_TIMEOUT
                )
            except PeerError as exc:  # down or slow: anti-entropy brings these
                self.dropped += len(wires) - at
                log.debug("announcing %d entries to %s failed: %s", len(wires) - at, address, exc)
                return
            self.sent += len(batch)

    async def receive(self, entries: list[ManifestEntry]) -> int:
        """Entries a coordinator announced to this node (outside their replica set as it saw
        the placement): applied like any learned from a peer; returns how many were news here.
        Keys this node replicates all the same (placement seen differently here) get their data."""
        assert self._apply is not None, "an announcer that receives needs apply"
        won = await self._apply(entries, mine_only=True)
        self.received += len(won)
        return len(won)

    def stats(self) -> dict[str, int]:
        queued = sum(map(len, self.pending.values()))
        return {"sent": self.sent, "received": self.received, "dropped": self.dropped, "queued": queued}
