"""The I/O shell around the membership and election cores.

It owns the clock (monotonic), the timers, persistence of what must survive a restart
(incarnation, election hard state, the member list) and the sending of messages. The cores
decide everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..core import election as election_core
from ..core import membership as membership_core
from ..core.election import Election, ElectionConfig
from ..core.membership import ALIVE, DEAD, LEFT, SUSPECT, Member, Membership, MembershipConfig
from ..errors import disk_full
from ..storage.metadata import MetadataDB
from .rpc import TLS_REFUSED
from .transport import PeerError, Transport, pack, unpack

log = logging.getLogger("p2pstore.gossip")

TICK = 0.05
STALL_TOLERANCE = 0.05  # a tick later than this counts as our own stall
PERSIST_MEMBERS_EVERY = 5.0
REFUSED = (401, 426, TLS_REFUSED)  # "not one of us": wrong secret, wrong protocol, wrong certificate
REFUSAL_MEMORY = 30.0  # seconds a refusal counts, unless a message was accepted since
FAILURE_LOG_EVERY = 60.0  # seconds between log lines about failing gossip steps


def membership_config(gossip_interval: float) -> MembershipConfig:
    """Scale the SWIM timers from the one user-facing knob, the protocol period."""
    return MembershipConfig(probe_interval=gossip_interval, probe_timeout=gossip_interval / 2)


def election_config(gossip_interval: float) -> ElectionConfig:
    hb = max(0.1, gossip_interval)
    return ElectionConfig(
        heartbeat_interval=hb,
        lease_duration=3 * hb,
        election_timeout_min=3 * hb,
        election_timeout_max=6 * hb,
    )


class Gossip:
    """Runs membership and election for one node and answers their messages."""

    def __init__(
        self,
        node_id: str,
        address: str,
        seeds: list[str],
        db: MetadataDB,
        transport: Transport,
        gossip_interval: float,
        dead_after: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.db = db
        self.transport = transport
        self.dead_after = dead_after
        self.seeds = [s for s in seeds if s != address]
        self.on_change = on_change or (lambda: None)
        now = time.monotonic()
        known = self._load_members()
        incarnation = int(self.db.get_state("incarnation") or b"0") + 1
        db.set_state("incarnation", str(incarnation).encode())
        term = int(self.db.get_state("term") or b"0")
        voted = self.db.get_state("voted_for")
        rng = random.Random()
        self.membership = Membership(
            node_id, address, rng=rng, now=now, config=membership_config(gossip_interval),
            incarnation=incarnation, seeds=seeds, known=known,
        )  # fmt: skip
        self.election = Election(
            node_id, rng=rng, now=now, config=election_config(gossip_interval),
            term=term, voted_for=voted.decode() if voted else None,
        )  # fmt: skip
        self._hard_state = self.election.hard_state()
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._last_persist = now
        self.rejected_messages = 0
        self.changes = 0  # bumped on every membership or leader event
        self._stalled = 0.0
        self._failure_logged = float("-inf")
        self.refusals: dict[str, tuple[float, str]] = {}  # peer address -> (when, why) it refused us
        self._last_accepted = float("-inf")
        self._placement_cache: tuple[int, float, list[str]] | None = None
        # Members this node has reached itself (a message to their address was taken, which
        # takes the cluster's credentials), or that were members before a restart: only these
        # keep a place in placement while dead. What a message claims about its sender counts
        # for nothing here.
        self.vouched: set[str] = {node_id, *(m.id for m in known)}

    # ---- persistence ----
    def _load_members(self) -> list[Member]:
        raw = self.db.get_state("members")
        if not raw:
            return []
        try:
            return [Member(**m) for m in unpack(raw)]
        except (TypeError, ValueError):
            log.warning("stored member list unreadable; joining through seeds only")
            return []

    def _persist_members(self) -> None:
        self.db.set_state("members", pack([asdict(m) for m in self.membership.snapshot()]))

    def _persist_hard_state(self) -> None:
        """Durably record (term, voted_for) before any message of that decision leaves."""
        state = self.election.hard_state()
        if state != self._hard_state:
            # together: a crash between two writes could pair a new term with an old vote
            self.db.set_states({"term": str(state[0]).encode(), "voted_for": (state[1] or "").encode()})
            self._hard_state = state

    # ---- views ----
    def voters(self) -> list[str]:
        return self.membership.voter_ids()

    def placement_ids(self) -> list[str]:
        """Members that keep their place in placement (cached: placement runs per key, and a
        full repair or handoff pass asks for every key; refreshed on any membership event and
        at least every second, since "dead for longer than dead_after" changes with time)."""
        now = self.mclock()
        cached = self._placement_cache
        if cached is not None and cached[0] == self.changes and now - cached[1] < 1.0:
            return cached[2]
        ids = self._placement_ids(now)
        self._placement_cache = (self.changes, now, ids)
        return ids

    def _placement_ids(self, now: float) -> list[str]:
        ids = []
        for m in self.membership.members():
            # A node that stopped (dead) or shut down gracefully (left) keeps its place for
            # dead_after: restarts and rolling updates move no data.
            # A member only ever heard of (a peer's gossip, never reached directly) does not:
            # otherwise one forged message naming fake members would make them replicas of many
            # keys for dead_after, and writes to those keys would fail.
            recent = now - m.last_change < self.dead_after
            vouched = m.id in self.vouched
            if m.state in (ALIVE, SUSPECT) or (m.state in (DEAD, LEFT) and recent and vouched):
                ids.append(m.id)
        return ids

    def address_of(self, node_id: str) -> str | None:
        return self.membership.address_of(node_id)

    def is_live(self, node_id: str) -> bool:
        return self.membership.state_of(node_id) in (ALIVE, SUSPECT)

    def live_peers(self) -> list[Member]:
        return [m for m in self.membership.members() if m.id != self.node_id and m.state in (ALIVE, SUSPECT)]

    def members_json(self) -> list[dict[str, Any]]:
        mono, wall = self.mclock(), time.time()
        return [
            {
                "id": m.id,
                "address": m.address,
                "state": m.state,
                "incarnation": m.incarnation,
                "last_seen": round(wall - (mono - m.last_seen), 3),
                "last_change": round(wall - (mono - m.last_change), 3),
                "self": m.id == self.node_id,
            }
            for m in sorted(self.membership.members(), key=lambda m: m.id)
        ]

    @property
    def leader(self) -> str | None:
        return self.election.leader

    @property
    def term(self) -> int:
        return self.election.term

    def is_leader(self) -> bool:
        return self.election.lease_valid(time.monotonic())

    # ---- running ----
    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="gossip")

    async def stop(self, announce_leave: bool = True) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if announce_leave:
            out = self.membership.leave(self.mclock())
            sends = [self._send_membership(addr, msg) for addr, msg in out]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 2.0)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            self._persist_members()

    def mclock(self) -> float:
        """The failure detector's clock: monotonic time minus the time this process itself was
        stalled (an overloaded CPU, a GC pause, SIGSTOP). Like Lifeguard's local health
        awareness, a node that was slow does not blame its peers for acks it could not read."""
        return time.monotonic() - self._stalled

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            lag = now - last - TICK
            last = now
            if lag > STALL_TOLERANCE:
                self._stalled += lag
                await asyncio.sleep(0)  # let replies that queued up during the stall in first
            try:
                self._step(now)
            except Exception as exc:
                self._step_failed(exc, now)

    def _step_failed(self, exc: Exception, now: float) -> None:
        """A step that failed: a full disk (the member list cannot be saved) is one line per
        minute, not a traceback every tick; anything else is logged in full once a minute."""
        if now - self._failure_logged < FAILURE_LOG_EVERY:
            return
        self._failure_logged = now
        if disk_full(exc) is not None:
            log.warning("gossip state not saved: disk full (retried every step)")
        else:
            log.exception("gossip step failed", exc_info=exc)

    def _step(self, now: float) -> None:
        self._dispatch_membership(self.membership.tick(self.mclock()))
        voters = self.voters()
        if not (self.seeds and len(voters) <= 1):
            # A node told to join through seeds waits until it has joined: alone it would be
            # its own majority and could lead a term that the real cluster also uses.
            self._dispatch_election(self.election.tick(now, voters))
        self._after_events()
        if now - self._last_persist > PERSIST_MEMBERS_EVERY:
            self._last_persist = now
            self._persist_members()

    def _after_events(self) -> None:
        changed = False
        for ev in self.membership.take_events():
            changed = True
            if ev.id != self.node_id or ev.new_state in (LEFT,):
                log.info(
                    "member %s (%s) %s -> %s (incarnation %d)",
                    ev.id, ev.address, ev.old_state or "new", ev.new_state, ev.incarnation,
                )  # fmt: skip
        for ev in self.election.take_events():
            changed = True
            if ev.leader:
                log.info("leader is %s in term %d", ev.leader, ev.term)
            else:
                log.info("no leader (term %d)", ev.term)
        if changed:
            self.changes += 1
            self.on_change()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch_membership(self, out: list[tuple[str, dict]]) -> None:
        for addr, msg in out:
            self._spawn(self._send_membership(addr, msg))

    def _dispatch_election(self, out: list[tuple[str, dict]]) -> None:
        if not out:
            return
        self._persist_hard_state()
        for dest, msg in out:
            addr = self.address_of(dest)
            if addr:
                self._spawn(self._send(addr, {"kind": "election", "from": self.node_id, "msg": msg}))

    async def _send_membership(self, addr: str, msg: dict) -> None:
        envelope = {"kind": "membership", "from": self.node_id, "msg": msg}
        if not await self._send(addr, envelope):
            self._dispatch_membership(self.membership.unreachable(addr, self.mclock()))

    async def _send(self, addr: str, envelope: dict) -> bool:
        try:
            await self.transport.call(addr, "/gossip", envelope, timeout=2.0)
        except PeerError as exc:
            if exc.status in REFUSED:  # up, but it will not take us (wrong secret or protocol)
                if not self.refusals:
                    log.error("peers refuse this node: %s", exc)
                self.refusals[addr] = (time.monotonic(), str(exc))
            return False
        self.refusals.pop(addr, None)
        self._last_accepted = time.monotonic()
        self._vouch(lambda m: m.address == addr)
        return True

    def _vouch(self, which: Callable[[Member], bool]) -> None:
        for m in self.membership.members():
            if m.id not in self.vouched and which(m):
                self.vouched.add(m.id)

    def refused(self) -> str | None:
        """Why this node is not part of its cluster although peers answer: every peer it reached
        lately refused its messages (a wrong cluster secret, another protocol version)."""
        now = time.monotonic()
        recent = [why for at, why in self.refusals.values() if now - at < REFUSAL_MEMORY]
        if not recent or now - self._last_accepted < REFUSAL_MEMORY:
            return None
        return f"refused by peers: {recent[-1]}"

    def joined(self) -> bool:
        """Part of a cluster: the membership knows it (core), and peers do not refuse it."""
        return self.membership.joined() and self.refused() is None

    # ---- receiving ----
    def receive(self, envelope: Any, src_host: str) -> None:
        """Feed one envelope to the right core; raises ValueError when malformed."""
        if not isinstance(envelope, dict) or not isinstance(envelope.get("from"), str):
            raise ValueError("gossip envelope must be a map with 'kind', 'from' and 'msg'")
        kind, src, msg = envelope.get("kind"), envelope["from"], envelope.get("msg")
        now = time.monotonic()
        if kind == "membership":
            membership_core.validate_message(msg)
            self._dispatch_membership(self.membership.receive(src_host, msg, self.mclock()))
        elif kind == "election":
            election_core.validate_message(msg)
            if src not in self.voters():
                return  # not (yet) a member: ignore until membership knows it
            self._dispatch_election(self.election.receive(src, msg, now, self.voters()))
        else:
            raise ValueError(f"unknown gossip kind {kind!r}")
        self._after_events()
