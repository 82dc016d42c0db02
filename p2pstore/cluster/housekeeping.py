"""Housekeeping that removes data, so every step waits for confirmation first.

* Handoff: a node that holds chunks of a file it is no longer a replica of (placement moved
  after a join, or after a long death) drops them only once every current replica confirms a
  complete copy of the same version.
* Tombstone GC (leader only): a tombstone older than ``tombstone_grace`` is forgotten only when
  every member is alive and confirms it holds that tombstone, so no node can later gossip the
  deleted file back to life. Members that are down block the GC; that is the point.
* Chunk GC (every node): chunk files no entry references, untouched for a while, are deleted.
  Those whose reference count fell to zero are found every round through an index; orphans (a
  crash between writing a chunk and committing its entry: no reference row at all) by a walk
  over every chunk name, a page per round at ``gc_scan_rate`` names/s, that keeps only its
  cursor: no burst of a million names on a timer, no set of them in memory.
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

ORPHAN_WALK_INTERVAL = 3600.0  # seconds from the start of one orphan walk to the next
ORPHAN_STARVED = 60.0  # a walk waits for a round without client traffic at most this long
ORPHAN_MAX_PAGE = 5000  # names per round at most (a round after a long pause is no burst)
MAX_CHUNK_GC_AGE = 600.0  # also the staging lifetime: dedupe touches keep live chunks young
LOW_SPACE_GC_AGE = 5.0  # close to refusing writes: a deleted file's chunks go within seconds
BATCH = 500
HANDOFF_RESCAN = 300.0
HANDOFF_PAGE = 1000  # manifest entries per page of a handoff pass
HANDOFF_PAGE_PAUSE = 0.01  # seconds between pages (a pass over 1,000,000 entries: >= 10 s)
MAX_SHARED = 100_000  # chunks shared with other files kept for the end of a pass; more wait


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
        self.gc_scan_rate = cfg.gc_scan_rate
        self.orphan_walks = 0
        self.orphan_names_checked = 0
        self._orphan_cursor: str | None = None  # where the walk in progress goes on; None: none is
        self._orphan_walk_started: float | None = None
        self._orphan_step_at = time.monotonic()
        self.segment_bytes_freed = 0  # by compaction (storage/segments.py)

    def stats(self) -> dict[str, int]:
        return {
            "handed_off_files": self.handed_off_files,
            "handed_off_chunks": self.handed_off_chunks,
            "tombstones_purged": self.tombstones_purged,
            "chunks_collected": self.chunks_collected,
            "orphan_walks": self.orphan_walks,
            "orphan_names_checked": self.orphan_names_checked,
            "segment_bytes_freed": self.segment_bytes_freed,
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
        """Walk the manifest a page at a time for files with a chunk held here that this node no
        longer replicates; hand off each batch of them once their owners confirm. Only a page
        and a batch are in memory (never a set of every chunk name): whether another entry still
        needs a chunk is asked of the reference counts and the inline index, under the exclusive
        GC lock, when the batch is dropped."""
        after: str | None = ""
        pending: list[ManifestEntry] = []
        shared: dict[str, int] = {}
        left = 0
        while after is not None:
            page, after = await self.store.in_io(self._surplus_page, after)
            pending += page
            while len(pending) >= BATCH or (after is None and pending):
                batch, pending = pending[:BATCH], pending[BATCH:]
                left += await self._hand_off(batch, shared)
            if after is not None:
                await asyncio.sleep(HANDOFF_PAGE_PAUSE)  # paced: a pass over a million entries is no burst
        if shared:
            await self._drop_shared(shared)
        self._surplus_left = left > 0

    def _surplus_page(self, after: str) -> tuple[list[ManifestEntry], str | None]:
        """In the I/O thread: the surplus entries among the next page of the manifest, and where
        the next page starts (None: done). Only entries with a chunk held here matter: one
        whose chunks are all absent is neither surplus nor protects a chunk, so placement is
        computed just for those, and whole entries are read just for the surplus ones."""
        store, peers, me = self.store, self.peers, self.peers.me
        rows = store.db.chunk_lists_after(after, HANDOFF_PAGE)
        surplus: list[str] = []
        for key, deleted, chunks, inline in yielding(rows):
            if deleted or not chunks or not (inline or any(store.has_chunk(c) for c in chunks)):
                continue
            if me not in peers.replicas_for(key):
                surplus.append(key)
        nxt = rows[-1][0] if len(rows) == HANDOFF_PAGE else None
        return [e for k in surplus if (e := store.db.get(k)) is not None], nxt

    async def _hand_off(self, batch: list[ManifestEntry], shared: dict[str, int]) -> int:
        """Drop the chunks of the files of ``batch`` their owners confirm; returns how many
        files are left (unconfirmed). A chunk another entry references as well goes to
        ``shared`` (with its reference count) for the end of the pass."""
        confirmed = await self._confirmed_elsewhere(batch)
        done = [e for e in batch if e.key in confirmed]
        if done:
            dropped = await self.store.drop_chunks_where(lambda: self._droppable(done, shared))
            self.handed_off_files += len(done)
            if dropped:
                self.handed_off_chunks += len(dropped)
                log.info("handoff: dropped %d chunks of %d files now held by their owners",
                         len(dropped), len(done))  # fmt: skip
        return len(batch) - len(done)

    def _droppable(self, entries: list[ManifestEntry], shared: dict[str, int]) -> list[str]:
        """Under the exclusive GC lock (no commit adds a reference meanwhile): the chunks of
        ``entries`` (handed off) that no other entry references. A reference is either a count
        in ``chunk_refs`` (rows without their bytes inline) or an inline copy (the index by
        sha256); an inline copy in a file this node replicates keeps the chunk, a counted
        reference from a row outside ``entries`` defers it to ``shared``."""
        db, keys = self.store.db, {e.key for e in entries}
        own: dict[str, int] = {}
        inline_here: dict[str, list[str]] = {}
        for e in entries:
            for c in e.chunks:
                if c not in inline_here:
                    inline_here[c] = db.inline_holders(c)
        for e in entries:
            if len(e.chunks) == 1 and e.key in inline_here[e.chunks[0]]:
                continue  # its bytes are in its row: no reference counted
            for c in e.chunks:
                own[c] = own.get(c, 0) + 1
        drop = []
        for c, holders in inline_here.items():
            if any(self.peers.me in self.peers.replicas_for(k) for k in holders if k not in keys):
                continue  # a file of this node holds the same bytes inline
            refs = db.chunk_refs(c)
            if refs > own.get(c, 0):
                if len(shared) < MAX_SHARED:
                    shared[c] = refs
            else:
                drop.append(c)
        return drop

    async def _drop_shared(self, shared: dict[str, int]) -> None:
        """The end of a pass: of the chunks other entries referenced as well, drop those that
        no file this node replicates references (one more paced walk, checking only them);
        one whose count changed since is kept for the next pass."""
        after: str | None = ""
        me, names = self.peers.me, set(shared)

        def page(after: str) -> str | None:
            rows = self.store.db.chunk_lists_after(after, HANDOFF_PAGE)
            for key, deleted, chunks, _ in yielding(rows):
                if not deleted and names.intersection(chunks) and me in self.peers.replicas_for(key):
                    names.difference_update(chunks)
            return rows[-1][0] if len(rows) == HANDOFF_PAGE else None

        while after is not None and names:
            after = await self.store.in_io(page, after)
            await asyncio.sleep(HANDOFF_PAGE_PAUSE)

        def unchanged() -> list[str]:
            return [c for c in names if self.store.db.chunk_refs(c) == shared[c]]

        dropped = await self.store.drop_chunks_where(unchanged) if names else []
        if dropped:
            self.handed_off_chunks += len(dropped)
            log.info("handoff: dropped %d chunks shared by files now held by their owners", len(dropped))

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
        """Chunks whose references fell to zero every round, and a page of the walk for
        orphans. A chunk must have been untouched for a while (a write that dedupes onto it
        touches it), except when the disk is nearly full: then space from deleted files comes
        back at once, and a write racing for the same bytes is told to retry (its commit finds
        the chunk gone) rather than refused for want of space."""
        low = await self.store.in_io(self.store.low_on_space)
        age = LOW_SPACE_GC_AGE if low else min(MAX_CHUNK_GC_AGE, self.tombstone_grace)
        self.chunks_collected += await self.store.collect_garbage(age)
        self.chunks_collected += await self.orphan_step(age)
        if low or not self.busy():  # one mostly dead segment per round, while clients wait not
            self.segment_bytes_freed += await self.store.in_io(self.store.chunks.compact)
        await self.store.in_io(self.store.reserve.ensure, self.store.min_free_bytes)  # after a delete used it

    async def orphan_step(self, age: float) -> int:
        """One paced page of the orphan walk; returns the chunks it deleted. A page holds the
        names earned at ``gc_scan_rate`` since the last one; while clients are served the walk
        waits (up to ORPHAN_STARVED), and a new walk starts ORPHAN_WALK_INTERVAL after the
        last one started. Each name costs a seek in the reference counts, so a page costs the
        same whatever the number of files; deletion re-checks under the exclusive GC lock, so a
        write that references a chunk while the walk looks at it keeps it."""
        now = time.monotonic()
        if self._orphan_cursor is None:
            started = self._orphan_walk_started
            if started is not None and now - started < ORPHAN_WALK_INTERVAL:
                return 0
        if self.busy() and now - self._orphan_step_at < ORPHAN_STARVED:
            return 0
        if self._orphan_cursor is None:
            self._orphan_cursor, self._orphan_walk_started = "", now
        limit = ORPHAN_MAX_PAGE
        if self.gc_scan_rate > 0:
            limit = max(1, min(ORPHAN_MAX_PAGE, int(self.gc_scan_rate * (now - self._orphan_step_at))))
        self._orphan_step_at = now
        removed = 0
        while True:
            deleted, checked, nxt = await self.store.collect_orphans(age, self._orphan_cursor, limit)
            removed += deleted
            self.orphan_names_checked += checked
            self._orphan_cursor = nxt
            if nxt is None:
                self.orphan_walks += 1
                break
            if self.gc_scan_rate > 0:
                break  # paced: the walk goes on next round
        return removed

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
        results = await asyncio.gather(*(self._purge_on(m.id, wire) for m in members), return_exceptions=True)
        done = sum(r for r in results if isinstance(r, int))
        self.tombstones_purged += len(purge)
        log.info("leader purged %d tombstones on %d members (%d rows)", len(purge), len(members), done)

    async def _purge_on(self, node_id: str, tombstones: list[dict[str, Any]]) -> int:
        if node_id == self.peers.me:
            return await self.purge_local(tombstones)
        reply = await self.peers.call(node_id, "/purge", {"tombstones": tombstones}, timeout=60)
        return int(reply["purged"])
