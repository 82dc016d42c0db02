"""Manifest anti-entropy: Merkle tree exchanges with peers (core/merkle.py MerkleSync) so that
every node converges on every entry, and the entries learned from peers applied here (the
repairer then fetches the data of those this node replicates). An exchange costs one root
comparison when the manifests agree and grows with their difference otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from ..core.hlc import HybridLogicalClock, check_not_ahead
from ..core.manifest import ManifestEntry
from ..core.merkle import MerkleSync
from ..storage.store import LocalStore
from .peers import Peers
from .repair import Repairer
from .transport import PeerError

log = logging.getLogger("p2pstore.antientropy")

BUSY_SYNC_INTERVAL = 15.0  # seconds between manifest exchanges while clients are being served
SYNC_TIMEOUT = 30.0  # per message of an exchange
STREAMS = 2  # exchanges over disjoint leaves run at once when many differ (sync_with)
CATCH_UP_TRIES = 5  # rounds of exchanges with every peer after start while they answer busy


def sync_interval(gossip_interval: float) -> float:
    """Mean seconds between exchanges while idle: four gossip periods, at least one second
    (each wait is drawn from 0.5x-1.5x of it, so nodes do not exchange in lockstep)."""
    return max(1.0, gossip_interval * 4)


class AntiEntropy:
    """This node's side of manifest exchanges, both as initiator and as the peer asked."""

    def __init__(
        self, store: LocalStore, clock: HybridLogicalClock, peers: Peers, repairer: Repairer,
        busy: Callable[[], bool], gossip_interval: float,
    ) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.peers = peers
        self.repairer = repairer
        self.busy = busy
        self.interval = sync_interval(gossip_interval)
        self.sync = MerkleSync()
        self.manifest_syncs = 0  # manifest exchanges this node started and completed
        self.entries_learned = 0  # entries from peers that won here (exchanges, announcements, reads)
        self.entries_served = 0  # entries this node shipped answering peers' exchanges
        self.refused_ahead = 0  # entries from peers refused: versions too far in the future
        self.catching_up = False  # the exchanges right after start are running (see handle)
        self._ahead_logged = float("-inf")

    async def loop(self) -> None:
        """Compare Merkle trees with a random live peer now and then; right after start
        (a restart after downtime), with every peer as soon as one is known, to catch up fast."""
        while not self.peers.live_peers():
            await asyncio.sleep(0.1)
        with contextlib.suppress(Exception):
            await self.catch_up()
        self.repairer.synced_once.set()  # the repairer's first full pass may start
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval * (0.5 + random.random()))
            peers = self.peers.live_peers()
            if not peers:
                continue
            if self.busy() and time.monotonic() - last < BUSY_SYNC_INTERVAL:
                continue  # under load, trees differ by the writes in flight: exchange rarely
            last = time.monotonic()
            peer = random.choice(peers)
            try:
                await self.sync_with(peer.address)
            except (PeerError, ValueError) as exc:
                log.debug("manifest sync with %s failed: %s", peer.id, exc)

    async def sync_with(self, address: str) -> int:
        """Run one Merkle exchange with a peer; return how many entries we applied.

        Each message is handled in an I/O thread (a batch reads thousands of leaves and hashes
        keys: on the event loop that stalled gossip long enough for peers to suspect this node),
        and the entries a message brings are applied while the next one is on its way (the
        exchange keeps no state between messages, so a batch never waits for the last one's
        commit). When many leaves differ (a node back from downtime), their batches are split
        into STREAMS exchanges over disjoint leaves that run at once, so that this node and the
        peer work at the same time rather than in turns. Every apply has finished on return."""
        started = time.monotonic()
        applying: list[asyncio.Future] = []
        streams: list[asyncio.Future] = []

        async def stream(msg: dict | None, fork: bool) -> None:
            while msg is not None and msg.get("type") != "merkle-done":
                answer = await self.peers.transport.call(address, "/manifest-sync", msg, timeout=SYNC_TIMEOUT)
                if isinstance(answer, dict) and answer.get("busy"):
                    raise PeerError(address, "catching up itself: exchange later")
                step = await self.store.in_io(self.sync.handle, self.store, answer)
                if step.apply:
                    applying.append(
                        asyncio.ensure_future(self.apply_remote_entries(step.apply, small=step.small))
                    )
                msg = step.reply
                if fork and msg is not None and msg.get("pending"):
                    fork = False
                    msg, *more = await self.store.in_io(self.sync.split, self.store, msg, STREAMS)
                    streams.extend(asyncio.ensure_future(stream(m, False)) for m in more)

        try:
            await stream(self.sync.open(self.store), True)
        finally:
            failed = [r for r in await asyncio.gather(*streams, return_exceptions=True) if r is not None]
            results = await asyncio.gather(*applying, return_exceptions=True)
        for r in [*failed, *results]:
            if isinstance(r, BaseException):
                raise r
        applied = sum(len(r) for r in results)
        self.manifest_syncs += 1
        if applied:
            log.info(
                "manifest sync with %s: %d entries learned in %.1fs",
                address,
                applied,
                time.monotonic() - started,
            )
        return applied

    async def catch_up(self) -> None:
        """``sync_all`` right after start, answering peers' exchanges busy meanwhile. When every
        peer was busy catching up itself (nodes started together), step aside for a random
        moment, answering again, and retry, so that two such nodes do not refuse each other
        forever; the timer's exchanges take over after CATCH_UP_TRIES."""
        for _ in range(CATCH_UP_TRIES):
            self.catching_up = True
            try:
                if await self.sync_all() is not None:
                    return
            finally:
                self.catching_up = False
            await asyncio.sleep(random.uniform(0.2, 1.0))

    async def sync_all(self) -> int | None:
        """One exchange with every live peer (recovery wants the newest view first): with one
        peer first, then with the rest at once. Any peer holds nearly everything this node
        missed, so the first exchange brings it and the others cost about a root comparison;
        exchanging with all at once had every peer ship (and this node check) the same
        differing leaves and entries again. A peer that is itself catching up answers busy:
        the next one is tried. None when no exchange completed."""
        peers = list(self.peers.live_peers())
        random.shuffle(peers)
        learned = 0
        for i, peer in enumerate(peers):
            try:
                learned += await self.sync_with(peer.address)
            except Exception as exc:  # any failure: the next peer is as good a first one
                log.debug("manifest sync with %s failed: %s", peer.id, exc)
                continue
            rest = peers[i + 1 :]
            results = await asyncio.gather(*(self.sync_with(m.address) for m in rest), return_exceptions=True)
            return learned + sum(r for r in results if isinstance(r, int))
        return None

    async def handle(self, msg: Any) -> dict:
        """A peer's exchange message; ValueError when malformed or not a Merkle message.

        While this node catches up after its start (``catch_up``), a peer's opening is answered
        ``merkle-done`` marked ``busy`` (an error to the peer's ``sync_with``, so a read lease
        never counts it as an exchange): the exchange this node runs brings the same entries,
        and a second one at once had both sides read, hash and ship the same differing leaves
        twice. The peer's next exchange (seconds later) compares trees as usual."""
        if self.catching_up and isinstance(msg, dict) and msg.get("type") == "merkle-root":
            return {"type": "merkle-done", "busy": True}
        step = await self.store.in_io(self.sync.handle, self.store, msg)
        if step.apply:
            await self.apply_remote_entries(step.apply, small=step.small)
        if step.reply:
            self.entries_served += len(step.reply.get("entries", ()))
        return step.reply or {"type": "merkle-done"}

    def _not_ahead(self, entries: list[ManifestEntry]) -> list[ManifestEntry]:
        """Leave out entries whose version runs ahead of this node's clock by more than clock
        skew: applied, such a version would win every later write of its key. Logged once a
        minute."""
        now = int(time.time() * 1000)
        kept = []
        for e in entries:
            try:
                check_not_ahead(e.version, now)
            except ValueError as exc:
                self.refused_ahead += 1
                if time.monotonic() - self._ahead_logged > 60:
                    self._ahead_logged = time.monotonic()
                    log.warning("refused an entry from a peer for %s: %s", e.key[:80], exc)
                continue
            kept.append(e)
        return kept

    async def apply_remote_entries(
        self, entries: list[ManifestEntry], mine_only: bool = False, small: dict[str, bytes] | None = None
    ) -> list:
        """Apply entries learned from a peer; fetch the data of those this node must hold
        (``mine_only``: look only at keys it replicates in its own view of placement).
        ``small``: checked bodies of small files that came with them, stored with the entries
        of keys this node replicates (one commit; the repair pass then finds them here)."""
        entries = self._not_ahead(entries)
        for e in entries:
            self.clock.observe(e.version)
        me = self.peers.me
        if small:
            ours = {e.sha256 for e in entries if me in self.peers.replicas_for(e.key)}
            small = {sha: data for sha, data in small.items() if sha in ours}
        won = await self.store.apply_entries(entries, small)
        self.entries_learned += len(won)
        # a small file whose body came along is whole here (stored in its row): no repair
        whole = small or {}
        keys = [
            new.key
            for _, new in won
            if not new.deleted and not (new.chunks == (new.sha256,) and new.sha256 in whole)
        ]
        if mine_only:
            keys = [k for k in keys if me in self.peers.replicas_for(k)]
        if keys:
            self.repairer.trigger_keys(keys)
        return won
