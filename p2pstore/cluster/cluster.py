"""The cluster side of one node, wired: which role gets which narrow pieces, started and
stopped in order. No behaviour of its own lives here.

Roles (one module each):
  writes.py / reads.py   the coordinator: any node takes any client request
  replica.py             what other nodes' coordinators ask of this node's store
  antientropy.py         Merkle-tree manifest exchanges; entries learned from peers
  repair.py              missing or corrupt chunks fetched from other replicas; the scrubber
  housekeeping.py        handoff, chunk GC, the leader's tombstone GC
  leases.py              read leases (reads served locally while no write can pass unseen)
  announce.py            new entries told to members outside a key's replicas
  admin.py               recover, checkpoint everywhere, replica reports
  gossip.py              membership and leader election (sans-I/O cores in core/)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ..config import NodeConfig
from ..core.hlc import HybridLogicalClock
from ..storage.store import LocalStore
from .admin import Admin
from .announce import EntryAnnouncer
from .antientropy import AntiEntropy
from .background import Background
from .budget import ByteBudget
from .compose import Composer, ComposeReplica
from .gossip import Gossip
from .housekeeping import Housekeeper
from .leases import Leases
from .peers import Peers
from .reads import ChunkFetcher, ReadCoordinator
from .repair import Repairer, Scrubber
from .replica import Replica
from .tls import client_context
from .transport import Transport
from .versioning import VersionOps
from .writes import WriteCoordinator

STOP_WAIT = 10.0  # seconds shutdown waits for replica writes still running after their ack


class Cluster:
    """Every cluster role of the node ``node_id``, built from its store, clock and config."""

    def __init__(
        self, config: NodeConfig, node_id: str, store: LocalStore, clock: HybridLogicalClock,
        busy: Callable[[], bool], new_version: Callable[[], str],
    ) -> None:  # fmt: skip
        cfg = config
        self.config = config
        self.store = store
        self.background = Background()
        tls = client_context(cfg.cluster_ca, cfg.node_cert, cfg.node_key) if cfg.internal_tls else None
        self.transport = Transport(cfg.cluster_secret, tls=tls)
        self.replica = Replica(store, clock, cfg)
        self.gossip = Gossip(
            node_id, cfg.advertise_address, cfg.seeds, store.db, self.transport, cfg.gossip_interval,
            cfg.dead_after, on_change=self._membership_changed,
        )  # fmt: skip
        peers = Peers(node_id, self.gossip, self.transport, cfg.replicas, self.replica.local_view)
        self.peers = peers
        self.fetcher = ChunkFetcher(node_id, store, peers, cfg.stall_timeout)
        self.repairer = Repairer(store, peers, self.fetcher.fetch, cfg.chunk_size, cfg.repair_rate)
        self.scrubber = Scrubber(
            store, self.repairer, self.chunk_went_bad, busy, cfg.scrub_rate, cfg.scrub_chunk_rate
        )
        self.antientropy = AntiEntropy(store, clock, peers, self.repairer, busy, cfg.gossip_interval)
        spawn = self.background.spawn
        self.leases = Leases(peers, store, spawn, self.antientropy.sync_with, cfg.replicas, cfg.read_lease)
        self.announcer = EntryAnnouncer(peers, spawn, self.antientropy.apply_remote_entries)
        self.reads = ReadCoordinator(
            node_id, store, peers, self.leases, self.antientropy, self.fetcher, self.background,
            cfg.write_quorum, cfg.chunk_size, ByteBudget(max(cfg.read_buffer_bytes, 2 * cfg.chunk_size)),
        )  # fmt: skip
        self.writes = WriteCoordinator(
            cfg, store, new_version, peers, self.replica, self.reads, self.leases, self.announcer,
            self.background,
        )  # fmt: skip
        self.composer = Composer(
            self.writes, ComposeReplica(node_id, store, self.fetcher, cfg.chunk_size, clock)
        )
        self.versions = VersionOps(store, self.reads, self.writes, self.composer)
        self.housekeeper = Housekeeper(store, peers, self.replica.purge, busy, cfg)
        self.admin = Admin(store, peers, self.antientropy, self.repairer)
        store.on_corrupt = self.chunk_went_bad
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Start every background role (needs the running event loop)."""
        self.gossip.start()
        self.repairer.start()
        self.scrubber.start()
        self.housekeeper.start()
        self.leases.start()
        self._tasks = [
            asyncio.create_task(self.antientropy.loop(), name="manifest-sync"),
            asyncio.create_task(self.replica.expire_staged_loop(), name="staged-expiry"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.repairer.stop()
        await self.scrubber.stop()
        await self.housekeeper.stop()
        await self.leases.stop()
        await self.background.wait(STOP_WAIT)
        await self.gossip.stop()
        await self.replica.abort_all()
        await self.transport.close()

    def _membership_changed(self) -> None:
        self.repairer.wake()  # it looks whether placement changed (flaps alone cost nothing)

    def chunk_went_bad(self, sha: str) -> None:
        """A local chunk failed verification: never serve it again, fetch a good copy."""
        self.background.spawn(self._quarantine_then_repair(sha))

    async def _quarantine_then_repair(self, sha: str) -> None:
        await self.store.quarantine_chunk(sha)
        self.repairer.trigger()
