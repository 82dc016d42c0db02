"""Housekeeping that removes data, so every step waits for confirmation first.

* Handoff: a node that holds chunks of a file it is no longer a replica of (placement moved
  after a join, or after a long death) drops them only once every current replica confirms a
  complete copy of the same version.
* Tombstone GC (leader only): a tombstone older than ``tombstone_grace`` is forgotten only when
  every member is alive and confirms it holds that tombstone, so no node can later gossip the
  deleted file back to life. Members that are down block the GC; that is the point.
* Chunk GC (every node): chunk files no entry references, untouched for a while, are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..config import NodeConfig
from ..core.manifest import ManifestEntry
from ..core.membership import ALIVE
from .background import BackgroundLoop, yielding
from .transport import PeerError

if TYPE_CHECKING:
    from ..storage.store import LocalStore
    from .peers import Peers

PurgeLocal = Callable[[list[dict[str, Any]]], Awaitable[int]]

log = logging.getLogger("p2pstore.housekeeping")

FULL_GC_INTERVAL = 3600.0  # seconds between full orphan scans (the first: once clients pause)
MAX_CHUNK_GC_AGE = 600.0  # also the staging lifetime: dedupe touches keep live chunks young
LOW_SPACE_GC_AGE = 5.0  # close to refusing writes: a deleted file's chunks go within seconds
BATCH = 500
HANDOFF_RESCAN = 300.0


class Housekeeper(BackgroundLoop):
    name = "housekeeping"

    def __init__(
        self, store: LocalStore, peers: Peers, purge_local: PurgeLocal, busy: Callable[[], bool],
        cfg: NodeConfig,
    ) -> None:  # fmt: skip
        self.store = store
        self.peers = peers
        self.purge_local = purge_local
        self.busy = busy
        self.replicas = cfg.replicas
        self.interval = max(2.0, cfg.gossip_interval * 10)
        self.tombstone_grace = cfg.tombstone_grace
        self.handed_off_files = 0
        self.handed_off_chunks = 0
        self.tombstones_purged = 0
        self.chunks_collected = 0
        self._placement_seen: tuple[str, ...] | None = None
        self._last_handoff = 0.0
        self._surplus_left = False
        self.handoff_running = False
        self._started = time.monotonic()
        self._last_full_gc: float | None = None

    def stats(self) -> dict[str, int]:
        return {
            "handed_off_files": self.handed_off_files,
            "handed_off_chunks": self.handed_off_chunks,
            "tombstones_purged": self.tombstones_purged,
            "chunks_collected": self.chunks_collected,
            "handoff_running": int(self.handoff_running),
        }

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for step in (self.handoff, self.collect_chunks, self.leader_tombstone_gc):
                try:
                    await step()
                except Exception:
                    log.exception("housekeeping step %s failed", step.__name__)

    # ---- handoff ----
    async def handoff(self) -> None:
        """Scan for surplus copies after placement changed (and every few minutes anyway)."""
        placement = tuple(sorted(self.peers.placement_ids()))
        now = time.monotonic()
        settled = placement == self._placement_seen and not self._surplus_left
        if settled and now - self._last_handoff < HANDOFF_RESCAN:
            return
        self._placement_seen, self._last_handoff = placement, now
        if self.peers.me in placement and len(placement) <= self.replicas:
            self._surplus_left = False  # every member holds every key: nothing can be surplus
            return
        self.handoff_running = True
        try:
            await self._handoff()
        finally:
            self.handoff_running = False

    async def _handoff(self) -> None:
        store, peers = self.store, self.peers
        me = peers.me

        def plan() -> tuple[set[str], list[ManifestEntry]]:
            # Only entries with a chunk held here matter: one whose chunks are all absent is
            # neither surplus nor protects a chunk from being dropped. So placement is computed
            # just for those, and whole entries are read just for the surplus ones.
            held = store.chunk_presence()
            needed: set[str] = set()
            surplus: list[str] = []
            for key, deleted, chunks in yielding(store.db.iter_chunk_lists()):
                if deleted or not chunks or not any(held(c) for c in chunks):
                    continue
                if me in peers.replicas_for(key):
                    needed.update(chunks)
                else:
                    surplus.append(key)
            return needed, [e for k in surplus if (e := store.db.get(k)) is not None]

        needed, surplus = await store.in_io(plan)
        left = 0
        for i in range(0, len(surplus), BATCH):
            batch = surplus[i : i + BATCH]
            confirmed = await self._confirmed_elsewhere(batch)
            left += len(batch) - len(confirmed)
            drop = {c for e in batch if e.key in confirmed for c in e.chunks} - needed
            if drop:
                await store.drop_chunks(drop)
                self.handed_off_files += len(confirmed)
                self.handed_off_chunks += len(drop)
                log.info("handoff: dropped %d chunks of %d files now held by their owners",
                         len(drop), len(confirmed))  # fmt: skip
        self._surplus_left = left > 0

    async def _confirmed_elsewhere(self, entries: list[ManifestEntry]) -> set[str]:
        """Keys whose every current replica reports a complete copy of this exact version."""
        by_node: dict[str, list[ManifestEntry]] = {}
        for e in entries:
            for n in self.peers.replicas_for(e.key):
                by_node.setdefault(n, []).append(e)
        ok = {e.key for e in entries}
        for node_id, es in by_node.items():
            views = await self._views(node_id, [e.key for e in es])
            for e in es:
                v = views.get(e.key)
                if not (v and v["complete"] and v["entry"] and v["entry"]["version"] == e.version):
                    ok.discard(e.key)
        return ok

    async def _views(self, node_id: str, keys: list[str]) -> dict[str, Any]:
        """``node_id``'s views of ``keys``; none from a member not strictly alive."""
        if node_id != self.peers.me and not self.peers.is_alive_member(node_id):
            return {}
        try:
            return dict(zip(keys, await self.peers.views(node_id, keys, timeout=30), strict=True))
        except (PeerError, KeyError, ValueError, TypeError):
            return {}

    # ---- chunk GC ----
    async def collect_chunks(self) -> None:
        """Chunks whose references fell to zero every round; a full scan for orphans (a crash
        between writing a chunk and committing its entry) now and then. A chunk must have been
        untouched for a while (a write that dedupes onto it touches it), except when the disk is
        nearly full: then space from deleted files comes back at once, and a write racing for
        the same bytes is told to retry (its commit finds the chunk gone) rather than refused for
        want of space."""
        low = await self.store.in_io(self.store.low_on_space)
        age = LOW_SPACE_GC_AGE if low else min(MAX_CHUNK_GC_AGE, self.tombstone_grace)
        now = time.monotonic()
        if self._last_full_gc is None:  # the first scan waits for a moment without client traffic
            full = not self.busy() or now - self._started >= FULL_GC_INTERVAL
        else:
            full = now - self._last_full_gc >= FULL_GC_INTERVAL
        if full:
            self._last_full_gc = now
        self.chunks_collected += await self.store.collect_garbage(age, full)
        await self.store.in_io(self.store.reserve.ensure, self.store.min_free_bytes)  # after a delete used it

    # ---- tombstone GC (leader) ----
    async def leader_tombstone_gc(self) -> None:
        if not self.peers.is_leader():
            return
        members = self.peers.members()
        if any(m.state != ALIVE for m in members):
            # Someone (dead, or stopped gracefully: "left") may still hold an older copy and
            # gossip it back after the purge: wait until every member is back, or removed.
            return
        before = time.time() - self.tombstone_grace
        old = await self.store.in_io(self.store.db.tombstones_before, before, BATCH)
        if not old:
            return
        keys = [t.key for t in old]
        confirmed = {t.key for t in old}
        for m in members:
            views = await self._views(m.id, keys)
            for t in old:
                v = views.get(t.key)
                if not (v and v["entry"] and v["entry"]["version"] == t.version and v["entry"]["deleted"]):
                    confirmed.discard(t.key)
        purge = [t for t in old if t.key in confirmed]
        if not purge:
            return
        wire = [t.to_wire() for t in purge]
        results = await asyncio.gather(
            *(self._purge_on(m.id, wire) for m in members), return_exceptions=True
        )
        done = sum(r for r in results if isinstance(r, int))
        self.tombstones_purged += len(purge)
        log.info("leader purged %d tombstones on %d members (%d rows)", len(purge), len(members), done)

    async def _purge_on(self, node_id: str, tombstones: list[dict[str, Any]]) -> int:
        if node_id == self.peers.me:
            return await self.purge_local(tombstones)
        reply = await self.peers.call(node_id, "/purge", {"tombstones": tombstones}, timeout=60)
        return int(reply["purged"])
