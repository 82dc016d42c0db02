"""Read leases on the network: asking for and granting them, reporting them with write
acknowledgements, and a coordinator's wait for the replicas that hold them (core/leases.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ..core.leases import EVERY_REPLICA, LeaseGrantor, LeaseHolder, holders_to_wait_for
from ..errors import StoreError, Unavailable
from .transport import PeerError

if TYPE_CHECKING:
    from ..storage.store import LocalStore
    from .peers import Peers

log = logging.getLogger("p2pstore.leases")

# An acknowledgement: (replica, its lease report, when it arrived on this node's clock).
Ack = tuple[str, dict[str, float], float]
SPACE_FOR_LEASES = 16 * 1024 * 1024  # hold no leases this close to refusing writes
SYNC_LIMIT = 10.0  # seconds (at least 5 leases) a new lease's manifest exchange may take


class Leases:
    """This node's read leases, as holder and as grantor."""

    def __init__(
        self, peers: Peers, store: LocalStore, spawn: Callable[[Coroutine[Any, Any, Any]], Any],
        sync_with: Callable[[str], Awaitable[int]], replicas: int, duration: float,
    ) -> None:  # fmt: skip
        self.peers = peers
        self.me = peers.me
        self.store = store
        self._spawn = spawn
        self._sync_with = sync_with  # a manifest exchange with the peer at an address
        self.replicas = replicas
        self.duration = duration
        self.grantor = LeaseGrantor(duration, time.monotonic(), backoff=max(5.0, 5 * duration))
        self.holder = LeaseHolder(duration)
        self.lease_reads = 0  # GETs answered from the local copy under leases
        self.writes_waited = 0  # writes that waited for a leaseholder past their quorum
        self.revocations_sent = 0
        self._ring: tuple[object, str] = (None, "")
        self._syncing: set[str] = set()
        self._sync_turn = asyncio.Lock()
        self._asking: set[str] = set()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.duration > 0:
            self._task = asyncio.create_task(self._renew_loop(), name="read-leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def ring(self) -> str:
        """A name for the current placement: leases hold only while both sides agree on it."""
        ids = self.peers.placement_ids()
        if self._ring[0] is not ids:
            self._ring = (ids, hashlib.blake2b("\n".join(sorted(ids)).encode(), digest_size=8).hexdigest())
        return self._ring[1]

    def stats(self) -> dict[str, Any]:
        return {
            "duration": self.duration,
            "wanted": self.holder.wanted(time.monotonic()),
            "held_from": self.held_from(),
            "granted_to": self.granted_to(),
            "lease_reads": self.lease_reads,
            "writes_waited": self.writes_waited,
            "revocations_sent": self.revocations_sent,
            "revoked_here": self.grantor.revocations,
        }

    def granted_to(self) -> list[str]:
        """The holders of this node's unexpired, unrevoked leases (the status page)."""
        now = time.monotonic()
        return sorted(h for h, g in self.grantor.grants.items() if g.until > now and not g.revoked)

    # ---- holder ----
    def held_from(self) -> list[str]:
        """The grantors whose leases count now."""
        return self.holder.valid(self.ring(), time.monotonic())

    def may_read_locally(self, replicas: list[str]) -> bool:
        """Whether a read of a key with these replicas may use the local copy alone; a read
        here also keeps (or starts) the renewals: leases are held only where reads are served."""
        if self.duration <= 0 or self.me not in replicas:
            return False
        now = time.monotonic()
        if self.holder.want(now) and self._task is not None:
            self._ask_all()  # after a quiet spell: renew now, not at the next round
        others = [n for n in replicas if n != self.me]
        return self.holder.covers(others, self.ring(), now)

    async def _renew_loop(self) -> None:
        while True:
            now = time.monotonic()
            if self.holder.wanted(now):
                self._ask_all()
            # grants run out when their holders stop reading: once none is left, write
            # acknowledgements skip the report (no placement lookup per write)
            self.grantor.expire(now)
            await asyncio.sleep(self.duration / 4)

    def _ask_all(self) -> None:
        if not self._space_ok():  # a node refusing writes for want of space would only be revoked
            return
        ring = self.ring()
        for node_id in self.peers.placement_ids():
            if node_id != self.me and node_id not in self._asking:
                self._asking.add(node_id)
                self._spawn(self._ask(node_id, ring))

    def _space_ok(self) -> bool:
        try:
            self.store.check_space(SPACE_FOR_LEASES)
        except StoreError:
            self.holder.held.clear()
            return False
        return True

    async def _ask(self, grantor: str, ring: str) -> None:
        try:
            address = self.peers.gossip.address_of(grantor)
            if address is None:
                self.holder.refused(grantor)
                return
            sent = time.monotonic()
            try:
                answer = await self.peers.transport.call(
                    address, "/lease", {"holder": self.me, "ring": ring}, timeout=self.duration / 2
                )
            except PeerError:
                self.holder.refused(grantor)
                return
            granted = answer.get("lease") if isinstance(answer, dict) else None
            if not isinstance(granted, dict) or ring != self.ring():
                self.holder.refused(grantor)
                return
            if self.holder.granted(grantor, ring, granted, sent) and grantor not in self._syncing:
                self._syncing.add(grantor)
                self._spawn(self._sync(grantor, address))
        finally:
            self._asking.discard(grantor)

    async def _sync(self, grantor: str, address: str) -> None:
        """Catch up with a new grantor before its lease counts (writes missed before it).

        One grantor at a time: when reads start after a write-only spell, a node that is not a
        replica of every key lags by the entries it learns only through anti-entropy, and
        exchanging them with every grantor at once sent each of them N-1 times over while
        client requests waited (6 nodes: GETs stalled for seconds). In turn, the first exchange
        brings most of them and the next ones find little left to send.
        """
        try:
            async with self._sync_turn:
                epoch = self.holder.epoch(grantor)  # the exchange starts now, under this lease
                if epoch is None:
                    return
                with contextlib.suppress(PeerError, ValueError, TimeoutError):
                    # bounded: a grantor that hangs mid-exchange must not hold up the others
                    async with asyncio.timeout(max(SYNC_LIMIT, 5 * self.duration)):
                        await self._sync_with(address)
                    self.holder.synced(grantor, epoch)
                    log.debug("%s: read lease from %s in force", self.me, grantor)
        finally:
            self._syncing.discard(grantor)

    # ---- grantor ----
    def handle_request(self, msg: Any) -> dict:
        holder, ring = msg.get("holder"), msg.get("ring")
        if not isinstance(holder, str) or not isinstance(ring, str):
            raise ValueError("lease needs holder and ring")
        if self.duration <= 0 or holder == self.me or not self.peers.is_live(holder):
            return {"lease": None}  # a holder this node sends no writes to would only be revoked
        now = time.monotonic()
        self.grantor.expire(now)
        return {"lease": self.grantor.grant(holder, ring, self.ring(), now)}

    def handle_revoke(self, msg: Any) -> dict:
        holder = msg.get("holder")
        if not isinstance(holder, str):
            raise ValueError("lease-revoke needs holder")
        grant = self.grantor.grants.get(holder)
        first = grant is not None and not grant.revoked
        left = self.grantor.revoke(holder, time.monotonic())
        if first:  # one line per lease, not per write that found it revoked
            log.info("%s: read lease of %s revoked (it missed a write); %.2f s left", self.me, holder, left)
        return {"left": left}

    def report(self, key: str) -> dict[str, float]:
        """The leaseholders a coordinator must wait for: sent with every write acknowledgement."""
        now = time.monotonic()
        if not self.grantor.grants and now >= self.grantor.blanket_until:
            return {}
        ids = self.peers.placement_ids()
        # with no more members than R every node replicates every key: no placement to compute
        replicas = ids if len(ids) <= self.replicas else self.peers.replicas_for(key)
        return self.grantor.report(replicas, self.ring(), now)

    # ---- coordinator ----
    async def settle(self, replicas: list[str], acks: list[Ack], tasks: Mapping[str, asyncio.Future]) -> None:
        """Before a write is acknowledged: every replica that holds a lease has the write, or
        its lease was revoked and has run out."""
        waits = holders_to_wait_for(((r, t) for _, r, t in acks), replicas, {n for n, _, _ in acks})
        if not waits:
            return
        self.writes_waited += 1
        if len(waits) == 1:  # the usual case: the third replica (no task to gather)
            [(holder, deadline)] = waits.items()
            await self._settle_one(holder, deadline, acks, tasks.get(holder))
        else:
            await asyncio.gather(*(self._settle_one(h, d, acks, tasks.get(h)) for h, d in waits.items()))

    async def _settle_one(
        self, holder: str, deadline: float, acks: list[Ack], task: asyncio.Future | None
    ) -> None:
        if await acked(task, deadline):
            return
        reporters = [n for n, report, _ in acks if holder in report or EVERY_REPLICA in report]
        lefts = await asyncio.gather(*(self._revoke(n, holder) for n in reporters), return_exceptions=True)
        ok = [left for left in lefts if isinstance(left, float)]
        if not ok:
            raise Unavailable(
                f"replica {holder} holds a read lease and did not take the write, and no grantor "
                "could revoke it; the write may or may not persist",
                {"outcome": "unknown", "leaseholder": holder},
            )
        await acked(task, time.monotonic() + min(ok))  # its own answer ends the wait early

    async def _revoke(self, grantor: str, holder: str) -> float:
        self.revocations_sent += 1
        if grantor == self.me:
            return float(self.handle_revoke({"holder": holder})["left"])
        answer = await self.peers.call(grantor, "/lease-revoke", {"holder": holder}, timeout=self.duration)
        return float(answer["left"])


async def acked(task: asyncio.Future | None, deadline: float) -> bool:
    """Wait (at most until ``deadline``) for a replica's write; True if it succeeded."""
    if task is None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        return False
    if not task.done():
        await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
    return acked_ok(task)


def acked_ok(task: asyncio.Future) -> bool:
    """The replica's write finished and succeeded (a cancelled one did not)."""
    return task.done() and not task.cancelled() and task.exception() is None
