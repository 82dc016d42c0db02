"""Deterministic discrete-event simulator for the membership and election cores.

FoundationDB-style: one seeded ``random.Random`` drives every delay, loss and node RNG, so the
same seed replays the same run. Events sit in a priority queue of ``(time, seq, ...)``; each node
is ticked every ``tick`` seconds (with a random phase). Messages are msgpack round-tripped so the
cores can only rely on what survives the wire.

Network model: per-message delay uniform in ``delay``; global loss ``loss``; one-way loss per
directed link (``set_link_loss``); partitions as groups of node ids (messages across groups
vanish silently, like a dropped route). Messages to a killed node or an address nobody listens
on fail fast, and the sender's ``Membership.unreachable`` is told (connection refused).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from p2pstore.core.election import LEADER, Election, ElectionConfig
from p2pstore.core.membership import Member, MemberEvent, Membership, MembershipConfig


@dataclass
class SimNode:
    """One simulated process: its cores plus what its shell would persist to disk."""

    id: str
    address: str
    membership: Membership
    election: Election | None
    up: bool = True
    hard_state: tuple[int, str | None] = (0, None)
    stored_incarnation: int = 0
    snapshot: list[Member] = field(default_factory=list)
    paused_until: float = 0.0  # stalled (SIGSTOP, a long GC pause): events wait until then
    clock_offset: float = 0.0  # time spent stalled, hidden from membership (the shell's mclock)

    def voters(self) -> list[str]:
        """Election voters: every known member that has not left (dead ones included)."""
        return self.membership.voter_ids()

    def view(self) -> dict[str, str]:
        """id -> state as this node sees it."""
        return {m.id: m.state for m in self.membership.members()}


class SimNet:
    """N nodes over a simulated network. See the module docstring."""

    def __init__(
        self,
        n: int,
        seed: int,
        *,
        tick: float = 0.1,
        delay: tuple[float, float] = (0.001, 0.010),
        loss: float = 0.0,
        membership_config: MembershipConfig | None = None,
        election_config: ElectionConfig | None = None,
        election: bool = True,
        bootstrap: str = "known",
        wire: bool = True,
    ) -> None:
        """bootstrap="known": every node starts knowing all others (an already-formed cluster);
        bootstrap="seeds": every node joins through n0's address only."""
        self.rng = random.Random(seed)
        self.now = 0.0
        self.tick_interval = tick
        self.delay = delay
        self.loss = loss
        self.mconfig = membership_config or MembershipConfig()
        self.econfig = election_config or ElectionConfig()
        self.with_election = election
        self.wire = wire
        self.nodes: dict[str, SimNode] = {}
        self.partitions: list[set[str]] | None = None
        self.link_loss: dict[tuple[str, str], float] = {}
        self.leader_history: set[tuple[int, str]] = set()
        self.messages_sent = 0
        self.bytes_sent = 0  # msgpack bytes of every message sent (counted when ``wire``)
        self.member_events: list[tuple[float, str, MemberEvent]] = []
        self._queue: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        self._addr_index: dict[str, str] = {}
        ids = [f"n{i}" for i in range(n)]
        addrs = {i: f"{i}.sim:7000" for i in ids}
        known = [Member(i, addrs[i], "alive", 0, 0.0, 0.0) for i in ids]
        for i in ids:
            if bootstrap == "known":
                self._start(i, addrs[i], 0, known=known, seeds=())
            else:
                self._start(i, addrs[i], 0, known=(), seeds=[addrs["n0"]])

    # ----------------------------------------------------------------- lifecycle

    def _start(self, node_id: str, address: str, incarnation: int, *,
               known: Iterable[Member], seeds: Iterable[str],
               hard_state: tuple[int, str | None] = (0, None)) -> SimNode:
        mrng = random.Random(self.rng.random())
        m = Membership(node_id, address, rng=mrng, now=self.now, config=self.mconfig,
                       incarnation=incarnation, seeds=seeds, known=known)
        e = None
        if self.with_election:
            e = Election(node_id, rng=random.Random(self.rng.random()), now=self.now,
                         config=self.econfig, term=hard_state[0], voted_for=hard_state[1])
        node = SimNode(node_id, address, m, e, hard_state=hard_state,
                       stored_incarnation=incarnation)
        self.nodes[node_id] = node
        self._addr_index = {a: i for a, i in self._addr_index.items() if i != node_id}
        self._addr_index[address] = node_id
        self._push(self.now + self.rng.uniform(0, self.tick_interval), "tick",
                   (node_id, id(m)))
        return node

    def add_node(self, node_id: str, seeds: Iterable[str]) -> SimNode:
        """A brand-new node joining through seed addresses."""
        return self._start(node_id, f"{node_id}.sim:7000", 0, known=(), seeds=list(seeds))

    def kill(self, node_id: str) -> None:
        """The process stops (kill -9): no more ticks or deliveries; disk state survives."""
        node = self.nodes[node_id]
        node.snapshot = node.membership.snapshot()
        node.up = False

    def restart(self, node_id: str, address: str | None = None) -> SimNode:
        """Restart with the persisted state: incarnation + 1, snapshot as `known`."""
        old = self.nodes[node_id]
        if old.up:
            self.kill(node_id)
        return self._start(node_id, address or old.address, old.stored_incarnation + 1,
                           known=old.snapshot, seeds=(), hard_state=old.hard_state)

    def stall(self, node_id: str, duration: float) -> None:
        """The process freezes for ``duration`` (SIGSTOP, a stuck event loop): messages to it
        queue up and are handled, in order, when it resumes; like the real shell (gossip.py
        ``mclock``) its membership core does not count the frozen time as its own waiting."""
        node = self.nodes[node_id]
        node.paused_until = max(node.paused_until, self.now + duration)
        node.clock_offset += duration

    def leave(self, node_id: str) -> None:
        """Graceful leave: send the announcement, then stop the process."""
        node = self.nodes[node_id]
        self._send_membership(node, node.membership.leave(self.now))
        self.kill(node_id)

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes within the same group can talk."""
        self.partitions = [set(g) for g in groups]

    def heal(self) -> None:
        """Remove partitions and one-way losses."""
        self.partitions = None
        self.link_loss.clear()

    def set_link_loss(self, src: str, dst: str, p: float) -> None:
        """One-way loss on the directed link src -> dst."""
        self.link_loss[(src, dst)] = p

    # ----------------------------------------------------------------- events

    def _push(self, t: float, kind: str, payload: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, payload))

    def _connected(self, src: str, dst: str) -> bool:
        if self.partitions is None:
            return True
        return any(src in g and dst in g for g in self.partitions)

    def _transmit(self, src: SimNode, dst_id: str | None, proto: str, dest: str,
                  msg: dict[str, Any]) -> None:
        self.messages_sent += 1
        if self.wire:
            raw = msgpack.packb(msg)
            self.bytes_sent += len(raw)
            msg = msgpack.unpackb(raw, raw=False)
        if dst_id is None or not self._connected(src.id, dst_id):
            return
        p = max(self.loss, self.link_loss.get((src.id, dst_id), 0.0))
        if p and self.rng.random() < p:
            return
        t = self.now + self.rng.uniform(*self.delay)
        self._push(t, "deliver", (proto, dst_id, dest, src.id, src.address, msg))

    def _send_membership(self, node: SimNode, out: list[tuple[str, dict[str, Any]]]) -> None:
        for addr, msg in out:
            dst = self._addr_index.get(addr)
            if dst is None or not self.nodes[dst].up:
                if self._connected(node.id, dst or node.id):
                    now = self.now - node.clock_offset
                    self._send_membership(node, node.membership.unreachable(addr, now))
                continue
            self._transmit(node, dst, "m", addr, msg)

    def _send_election(self, node: SimNode, out: list[tuple[str, dict[str, Any]]]) -> None:
        assert node.election is not None
        node.hard_state = node.election.hard_state()  # persist BEFORE sending
        for dst, msg in out:
            if dst in self.nodes and self.nodes[dst].up:
                self._transmit(node, dst, "e", dst, msg)

    def _observe(self, node: SimNode) -> None:
        node.stored_incarnation = node.membership.incarnation
        for ev in node.membership.take_events():
            self.member_events.append((self.now, node.id, ev))
        e = node.election
        if e is not None and e.role == LEADER:
            self.leader_history.add((e.term, node.id))

    def step(self) -> bool:
        """Process one event; False when the queue is empty."""
        if not self._queue:
            return False
        t, _, kind, payload = heapq.heappop(self._queue)
        self.now = max(self.now, t)
        target = self.nodes[payload[0] if kind == "tick" else payload[1]]
        if target.paused_until > self.now:
            self._push(target.paused_until, kind, payload)  # frozen: handled in order on resume
            return True
        if kind == "tick":
            node_id, incarnation_key = payload
            node = self.nodes[node_id]
            if not node.up or id(node.membership) != incarnation_key:
                return True  # a killed or replaced process stops ticking
            self._send_membership(node, node.membership.tick(self.now - node.clock_offset))
            if node.election is not None:
                self._send_election(node, node.election.tick(self.now, node.voters()))
            self._observe(node)
            self._push(self.now + self.tick_interval, "tick", payload)
        else:
            proto, dst_id, dest, src_id, src_addr, msg = payload
            node = self.nodes[dst_id]
            if not node.up or (proto == "m" and node.address != dest):
                return True
            if proto == "m":
                now = self.now - node.clock_offset
                self._send_membership(node, node.membership.receive(src_addr, msg, now))
            elif node.election is not None:
                out = node.election.receive(src_id, msg, self.now, node.voters())
                self._send_election(node, out)
            self._observe(node)
        return True

    def run_until(self, predicate: Callable[[], bool], deadline: float,
                  check_every: float | None = None) -> float | None:
        """Run until predicate() holds (checked every tick) or `deadline`; return the time."""
        every = check_every or self.tick_interval
        next_check = self.now
        while self.now <= deadline:
            if self.now >= next_check:
                if predicate():
                    return self.now
                next_check = self.now + every
            if not self._queue or self._queue[0][0] > deadline:
                break
            self.step()
        return self.now if predicate() else None

    def run_for(self, duration: float, every: Callable[[], None] | None = None) -> None:
        """Run for `duration` seconds, calling `every()` once per tick interval (invariants)."""
        end = self.now + duration
        next_check = self.now
        while self._queue and self._queue[0][0] <= end:
            self.step()
            if every is not None and self.now >= next_check:
                every()
                next_check = self.now + self.tick_interval
        self.now = end

    # ----------------------------------------------------------------- views

    def live(self) -> list[SimNode]:
        """Nodes whose process is running."""
        return [n for n in self.nodes.values() if n.up]

    def state_of(self, observer: str, subject: str) -> str | None:
        """subject's state in observer's table."""
        return self.nodes[observer].membership.state_of(subject)

    def views(self) -> dict[str, dict[str, str]]:
        """Per live node: id -> state."""
        return {n.id: n.view() for n in self.live()}

    def leaders(self, among: Iterable[str] | None = None) -> dict[str, tuple[int, str | None]]:
        """Per live node (optionally a subset): (term, leader it believes in)."""
        ids = set(among) if among is not None else set(self.nodes)
        return {n.id: (n.election.term, n.election.leader) for n in self.live()
                if n.id in ids and n.election is not None}

    def acting_leaders(self, among: Iterable[str] | None = None) -> list[str]:
        """Live nodes that currently hold the leader role."""
        ids = set(among) if among is not None else set(self.nodes)
        return [n.id for n in self.live() if n.id in ids and n.election is not None
                and n.election.role == LEADER]

    def leaders_by_term(self) -> dict[int, set[str]]:
        """Every (term -> leaders) ever observed; safety means each set has one element."""
        out: dict[int, set[str]] = {}
        for term, leader in self.leader_history:
            out.setdefault(term, set()).add(leader)
        return out

    def assert_election_safety(self) -> None:
        """At most one leader per term, over the whole history."""
        bad = {t: ls for t, ls in self.leaders_by_term().items() if len(ls) > 1}
        assert not bad, f"two leaders in the same term: {bad}"


def measure_dissemination(n: int, seed: int, *, warmup: float = 5.0,
                          deadline: float = 120.0) -> list[float]:
    """Spread one update (n1 bumps its incarnation) through an idle N-node cluster.

    Returns, per node, the delay in probe periods until it saw the update (sorted), so callers
    can read off the time to reach 50 %, 90 %, 100 % of the cluster.
    """
    sim = SimNet(n, seed, election=False)
    sim.run_for(warmup)
    origin = sim.nodes["n1"].membership
    origin.announce(sim.now)
    target, t0 = origin.incarnation, sim.now
    seen: dict[str, float] = {"n1": 0.0}
    period = sim.mconfig.probe_interval

    def check() -> bool:
        for node in sim.live():
            if node.id not in seen:
                m = node.membership.member("n1")
                if m is not None and m.incarnation >= target:
                    seen[node.id] = (sim.now - t0) / period
        return len(seen) == n

    sim.run_until(check, t0 + deadline)
    return sorted(seen.values()) + [float("inf")] * (n - len(seen))
