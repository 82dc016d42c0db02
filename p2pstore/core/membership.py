"""SWIM failure detection with Lifeguard suspicion, as a sans-I/O state machine.

The shell calls :meth:`Membership.tick` on a timer and :meth:`Membership.receive` for every
message; both return ``(dest_address, message)`` pairs to send. There is no clock, socket or
global randomness in here, so a test process can run hundreds of nodes deterministically.

Protocol summary (see docs/protocols.md for the derivations):

* every ``probe_interval`` probe one member (shuffled round-robin): ``ping`` → ``ack``; after
  ``probe_timeout`` ask ``indirect_checks`` others to probe via ``ping-req``; no ack by the end of
  the period → *suspect*.
* a suspect becomes *dead* after a Lifeguard timeout that starts high and shrinks towards
  ``suspicion_mult * log10(max(N, 10)) * probe_interval`` as distinct members confirm it.
* a member that hears it is suspected/dead refutes with a higher incarnation.
* state changes piggyback on ping/ack/ping-req with a bounded retransmit count.
* every ``push_pull_interval`` a full-state ``sync``/``sync-ack`` with one random live member;
  every ``reconnect_interval`` a ``sync`` to one dead member so healed partitions re-merge.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from p2pstore.core.messages import (
    MAX_ADDR_LEN,
    Message,
    Outgoing,
    optional_str,
    require_dict,
    require_int,
    require_list,
    require_str,
)

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
STATES = (ALIVE, SUSPECT, DEAD, LEFT)
# For equal incarnations the more "final" state wins; this makes merges commutative.
PRECEDENCE = {ALIVE: 0, SUSPECT: 1, DEAD: 2, LEFT: 3}

MESSAGE_TYPES = ("ping", "ack", "ping-req", "sync", "sync-ack", "gossip")
MAX_UPDATES = 64
MAX_MEMBERS = 10_000


@dataclass(frozen=True)
class MembershipConfig:
    """Tunables, named like hashicorp/memberlist's LAN profile (values in seconds)."""

    probe_interval: float = 1.0
    """One probe per period; all detection bounds are multiples of this."""
    probe_timeout: float = 0.5
    """Wait this long for a direct ack before asking others (must be < probe_interval)."""
    indirect_checks: int = 3
    """k members asked to probe indirectly; hides one lossy link between us and the target."""
    suspicion_mult: int = 4
    """Minimum suspicion timeout = suspicion_mult * log10(max(N, 10)) * probe_interval."""
    suspicion_max_timeout_mult: int = 6
    """The timer starts at this multiple of the minimum and shrinks with confirmations."""
    retransmit_mult: int = 4
    """λ: each update is piggybacked λ * ceil(log10(N + 1)) times."""
    max_piggyback: int = 8
    """At most this many updates ride on one message (keeps packets small)."""
    push_pull_interval: float = 30.0
    """Full-state anti-entropy with one random live member; repairs lost gossip."""
    reconnect_interval: float = 10.0
    """Sync with one random dead member so partitions heal without an operator."""
    reap_timeout: float = 24 * 3600.0
    """Dead/left members are forgotten after this long (or by Membership.remove)."""
    join_retry_interval: float = 1.0
    """While we know nobody, re-send a sync to every seed this often."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval")
        if self.indirect_checks < 0 or self.suspicion_mult < 1 or self.retransmit_mult < 1:
            raise ValueError("indirect_checks >= 0, suspicion_mult >= 1, retransmit_mult >= 1")


@dataclass
class Member:
    """One row of the member table (the shell persists these via snapshot())."""

    id: str
    address: str
    state: str
    incarnation: int
    last_change: float
    last_seen: float


@dataclass
class MemberEvent:
    """Emitted when a member's state or address changes (for logs and the status page)."""

    id: str
    address: str
    old_state: str | None
    new_state: str
    incarnation: int


# --------------------------------------------------------------------------- validation


def _validate_record(rec: object) -> dict[str, Any]:
    """One member record: {"id", "addr", "state", "inc", optional "by"}."""
    if not isinstance(rec, dict):
        raise ValueError(f"member record must be a map, got {type(rec).__name__}")
    state = rec.get("state")
    if state not in STATES:
        raise ValueError(f"member record has invalid state {state!r}")
    out: dict[str, Any] = {
        "id": require_str(rec, "id"),
        "addr": require_str(rec, "addr", max_len=MAX_ADDR_LEN),
        "state": state,
        "inc": require_int(rec, "inc"),
    }
    by = optional_str(rec, "by")
    if by is not None:
        out["by"] = by
    return out


def validate_message(msg: object) -> Message:
    """Check a decoded membership message and return a normalized copy.

    Raises ValueError with a readable reason for anything malformed: unknown type, missing or
    mistyped fields, oversized lists. Unknown extra fields are dropped (forward compatible).
    """
    raw = require_dict(msg)
    kind = raw["type"]
    if kind not in MESSAGE_TYPES:
        raise ValueError(f"unknown membership message type {kind!r}")
    out: Message = {
        "type": kind,
        "from": require_str(raw, "from"),
        "addr": require_str(raw, "addr", max_len=MAX_ADDR_LEN),
        "inc": require_int(raw, "inc"),
    }
    if kind in ("ping", "ack", "ping-req"):
        out["seq"] = require_int(raw, "seq")
    if kind in ("ping", "ping-req"):
        out["target"] = require_str(raw, "target")
    if kind == "ping-req":
        out["target_addr"] = require_str(raw, "target_addr", max_len=MAX_ADDR_LEN)
    if kind in ("sync", "sync-ack"):
        out["members"] = [_validate_record(r) for r in require_list(raw, "members",
                                                                     max_len=MAX_MEMBERS)]
    else:
        updates = raw.get("updates", [])
        if not isinstance(updates, list) or len(updates) > MAX_UPDATES:
            raise ValueError(f"'updates' must be a list of at most {MAX_UPDATES} records")
        out["updates"] = [_validate_record(r) for r in updates]
    return out


# --------------------------------------------------------------------------- suspicion


@dataclass
class Suspicion:
    """Lifeguard suspicion timer: independent confirmations shorten the timeout.

    With ``k`` expected confirmations the timeout falls logarithmically from ``max_timeout``
    (no confirmation) to ``min_timeout`` (k confirmations). A member that is truly dead is
    soon confirmed by several probers, so it is declared dead quickly; a member suspected by
    one node with a bad link gets the long timeout and plenty of time to refute.
    """

    start: float
    min_timeout: float
    max_timeout: float
    k: int
    suspecters: set[str] = field(default_factory=set)

    def confirm(self, by: str) -> bool:
        """Record a distinct suspecter; True if it was new."""
        if by in self.suspecters:
            return False
        self.suspecters.add(by)
        return True

    def timeout(self) -> float:
        """Current timeout; the first suspecter is not a confirmation."""
        confirmations = max(0, len(self.suspecters) - 1)
        if self.k < 1 or confirmations >= self.k:
            return self.min_timeout
        frac = math.log(confirmations + 1) / math.log(self.k + 1)
        return max(self.min_timeout, self.max_timeout - frac * (self.max_timeout - self.min_timeout))

    def deadline(self) -> float:
        """The time at which the suspect is declared dead."""
        return self.start + self.timeout()


def suspicion_timeouts(config: MembershipConfig, n: int) -> tuple[float, float]:
    """(min, max) suspicion timeout for a cluster of ``n`` live members."""
    low = config.suspicion_mult * math.log10(max(n, 10)) * config.probe_interval
    return low, low * config.suspicion_max_timeout_mult


def retransmit_limit(config: MembershipConfig, n: int) -> int:
    """λ·ceil(log10(n+1)): enough sends that gossip reaches everyone with high probability."""
    return config.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))


def newer(inc: int, state: str, cur_inc: int, cur_state: str) -> bool:
    """Does (inc, state) supersede (cur_inc, cur_state)? Incarnation first, then precedence."""
    if inc != cur_inc:
        return inc > cur_inc
    return PRECEDENCE[state] > PRECEDENCE[cur_state]


# --------------------------------------------------------------------------- broadcasts


class BroadcastQueue:
    """Retransmit-limited piggyback queue: least-sent, then newest, first (memberlist queue.go).

    One entry per member id: a newer update about a member replaces the older one, so stale
    states are never re-gossiped.
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[dict[str, Any], int, int]] = {}  # id -> (rec, sent, order)
        self._order = 0

    def push(self, rec: dict[str, Any]) -> None:
        """Queue (or replace) the update for rec["id"]."""
        self._order += 1
        self._items[rec["id"]] = (dict(rec), 0, self._order)

    def take(self, limit: int, max_sends: int) -> list[dict[str, Any]]:
        """Pick up to ``limit`` updates, counting one transmission each."""
        ranked = sorted(self._items.items(), key=lambda kv: (kv[1][1], -kv[1][2]))[:limit]
        out = []
        for key, (rec, sent, order) in ranked:
            out.append(dict(rec))
            if sent + 1 >= max_sends:
                del self._items[key]
            else:
                self._items[key] = (rec, sent + 1, order)
        return out

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- the core


@dataclass
class _Probe:
    seq: int
    target: str
    address: str
    sent_at: float
    indirect_sent: bool = False
    acked: bool = False


class Membership:
    """The membership state machine of one node. See the module docstring."""

    def __init__(
        self,
        self_id: str,
        address: str,
        *,
        rng: random.Random,
        now: float,
        config: MembershipConfig | None = None,
        incarnation: int = 0,
        seeds: Iterable[str] = (),
        known: Iterable[Member] = (),
    ) -> None:
        self.self_id = self_id
        self.address = address
        self.config = config or MembershipConfig()
        self._rng = rng
        self._incarnation = incarnation
        self._left = False
        self._seeds = [s for s in seeds if s != address]
        self._members: dict[str, Member] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._removed: dict[str, tuple[int, float]] = {}  # id -> (incarnation, removed_at)
        self._events: list[MemberEvent] = []
        self._queue = BroadcastQueue()
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._relays: dict[int, tuple[str, int, float]] = {}  # our seq -> (addr, their seq, exp)
        for m in known:
            if m.id != self_id:
                state = ALIVE if m.state == SUSPECT else m.state
                self._members[m.id] = replace(m, state=state, last_change=now)
            else:
                self._incarnation = max(self._incarnation, m.incarnation)
        self._members[self_id] = Member(self_id, address, ALIVE, self._incarnation, now, now)
        self._queue.push(self._record(self._members[self_id]))
        self._next_probe = now + rng.uniform(0, self.config.probe_interval)
        self._next_push_pull = now  # first tick: join via seeds or known members
        self._next_reconnect = now + self.config.reconnect_interval * (0.5 + rng.random())
        self._next_join = now

    # ----------------------------------------------------------------- public API

    @property
    def incarnation(self) -> int:
        """Our incarnation; the shell persists it and restarts with stored + 1."""
        return self._incarnation

    def members(self) -> list[Member]:
        """All known members including self (copies)."""
        return [replace(m) for m in self._members.values()]

    def known_count(self) -> int:
        """Members known in any state, self included (dead and left ones until removed or reaped)."""
        return len(self._members)

    def joined(self) -> bool:
        """False while a node given seeds has not heard of any other member: it does not know its
        cluster yet (a node without seeds is a cluster of its own until others join it)."""
        return not self._seeds or len(self._members) > 1

    @property
    def seeds(self) -> list[str]:
        return list(self._seeds)

    def voter_ids(self) -> list[str]:
        """Ids of every member that has not left (dead ones included): the election voters."""
        return [m.id for m in self._members.values() if m.state != LEFT]

    def state_of(self, member_id: str) -> str | None:
        """A member's state without copying the table (cheap, for hot paths)."""
        m = self._members.get(member_id)
        return m.state if m else None

    def address_of(self, member_id: str) -> str | None:
        """A member's address without copying the table (cheap, for hot paths)."""
        m = self._members.get(member_id)
        return m.address if m else None

    def member(self, member_id: str) -> Member | None:
        """One member (copy) or None."""
        m = self._members.get(member_id)
        return replace(m) if m else None

    def snapshot(self) -> list[Member]:
        """What the shell persists, to rejoin without seeds after a restart."""
        return self.members()

    def take_events(self) -> list[MemberEvent]:
        """Drain state-change events."""
        events, self._events = self._events, []
        return events

    def tick(self, now: float) -> list[Outgoing]:
        """Advance timers: probes, indirect probes, suspicion expiry, sync, reconnect, reap."""
        if self._left:
            return []
        out: list[Outgoing] = []
        self._expire_suspicions(now)
        if self._probe and not self._probe.acked and not self._probe.indirect_sent \
                and now >= self._probe.sent_at + self.config.probe_timeout:
            out += self._send_indirect(now)
        if now >= self._next_probe:
            out += self._probe_round(now)
            self._reap(now)
            self._relays = {s: r for s, r in self._relays.items() if r[2] > now}
        out += self._sync_timers(now)
        return out

    def receive(self, src_address: str, msg: dict[str, Any], now: float) -> list[Outgoing]:
        """Handle one message. Raises ValueError for malformed input (the shell answers 400).

        Replies go to the sender's advertised ``addr`` field; ``src_address`` is only used if
        that is empty, because an HTTP peer's source port is not its listening port.
        """
        m = validate_message(msg)
        if m["from"] == self.self_id and m["addr"] == self.address:
            return []
        reply_to = m["addr"] or src_address
        self._apply({"id": m["from"], "addr": m["addr"], "state": ALIVE, "inc": m["inc"]}, now)
        sender = self._members.get(m["from"])
        if sender and sender.state == ALIVE and sender.incarnation == m["inc"]:
            sender.last_seen = now
        for rec in m.get("updates", ()):
            self._apply(rec, now)
        kind = m["type"]
        if kind == "ping":
            if m["target"] != self.self_id:
                return []  # meant for a previous owner of this address
            return [(reply_to, self._msg("ack", seq=m["seq"]))]
        if self._left:
            return []
        if kind == "ack":
            return self._on_ack(m, now)
        if kind == "ping-req":
            self._seq += 1
            self._relays[self._seq] = (reply_to, m["seq"], now + self.config.probe_interval)
            ping = self._msg("ping", seq=self._seq, target=m["target"])
            return [(m["target_addr"], ping)]
        if kind in ("sync", "sync-ack"):
            self._merge_state(m["members"], now)
            if kind == "sync":
                return [(reply_to, self._full_state("sync-ack"))]
        return []

    def leave(self, now: float) -> list[Outgoing]:
        """Graceful shutdown: mark ourselves left and tell every live member directly."""
        me = self._members[self.self_id]
        self._left = True
        self._set_state(me, LEFT, now)
        rec = self._record(me)
        self._queue.push(rec)
        out: list[Outgoing] = []
        for m in self._others((ALIVE, SUSPECT)):
            out.append((m.address, self._msg("gossip", updates=[dict(rec)])))
        return out

    def remove(self, member_id: str) -> None:
        """Operator removes a (dead) member: forget it and gossip it as left.

        Gossiping "left" (which beats "dead" at the same incarnation) makes every node drop it
        from the election quorum; a tombstone stops stale gossip from re-adding it unless it
        comes back with a higher incarnation.
        """
        if member_id == self.self_id:
            raise ValueError("a node cannot remove itself; use leave()")
        m = self._members.pop(member_id, None)
        if m is None:
            return
        self._suspicions.pop(member_id, None)
        self._removed[member_id] = (m.incarnation, m.last_change)
        self._queue.push({"id": m.id, "addr": m.address, "state": LEFT, "inc": m.incarnation})

    def unreachable(self, dest_address: str, now: float) -> list[Outgoing]:
        """The shell could not connect: skip the probe timeout and go indirect at once."""
        p = self._probe
        if p and p.address == dest_address and not p.acked and not p.indirect_sent:
            return self._send_indirect(now)
        return []

    def announce(self, now: float, address: str | None = None) -> list[Outgoing]:
        """Bump our incarnation (optionally with a new advertised address) and gossip it."""
        if address:
            self.address = address
        self._refute(self._incarnation, now)
        return []

    # ----------------------------------------------------------------- records and messages

    @staticmethod
    def _record(m: Member, by: str | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": m.id, "addr": m.address, "state": m.state,
                               "inc": m.incarnation}
        if by is not None:
            rec["by"] = by
        return rec

    def _live_count(self) -> int:
        return sum(1 for m in self._members.values() if m.state in (ALIVE, SUSPECT))

    def _msg(self, kind: str, **fields: Any) -> Message:
        msg: Message = {"type": kind, "from": self.self_id, "addr": self.address,
                        "inc": self._incarnation, **fields}
        if kind not in ("sync", "sync-ack") and "updates" not in msg:
            msg["updates"] = self._queue.take(self.config.max_piggyback,
                                              retransmit_limit(self.config, self._live_count()))
        return msg

    def _full_state(self, kind: str) -> Message:
        return self._msg(kind, members=[self._record(m) for m in self._members.values()])

    def _others(self, states: tuple[str, ...]) -> list[Member]:
        return [m for m in self._members.values() if m.id != self.self_id and m.state in states]

    # ----------------------------------------------------------------- state changes

    def _emit(self, m: Member, old: str | None) -> None:
        self._events.append(MemberEvent(m.id, m.address, old, m.state, m.incarnation))

    def _set_state(self, m: Member, state: str, now: float) -> None:
        old = m.state
        m.state = state
        m.last_change = now
        if state == ALIVE:
            m.last_seen = now
        self._emit(m, old)

    def _refute(self, inc: int, now: float) -> None:
        """Someone doubts us: out-number them and gossip that we are alive."""
        self._incarnation = max(self._incarnation, inc) + 1
        me = self._members[self.self_id]
        me.incarnation = self._incarnation
        if me.address != self.address:
            me.address = self.address
            self._emit(me, me.state)
        self._queue.push(self._record(me))

    def _apply(self, rec: dict[str, Any], now: float, *, from_sync: bool = False) -> None:
        """Merge one update using (incarnation, precedence); gossip it on if it was news."""
        mid, inc, state = rec["id"], rec["inc"], rec["state"]
        if mid == self.self_id:
            if self._left:
                return
            doubted = state != ALIVE or rec["addr"] != self.address
            if (doubted and inc >= self._incarnation) or inc > self._incarnation:
                self._refute(inc, now)
            return
        removed = self._removed.get(mid)
        if removed and inc <= removed[0]:
            return
        self._removed.pop(mid, None)
        cur = self._members.get(mid)
        if cur is None:
            m = Member(mid, rec["addr"], state, inc, now, now)
            self._members[mid] = m
            self._emit(m, None)
            if state == SUSPECT:
                self._start_suspicion(m, rec.get("by") or mid, now)
            self._queue.push(self._record(m, rec.get("by")))
            return
        if not newer(inc, state, cur.incarnation, cur.state):
            if state == SUSPECT and cur.state == SUSPECT and inc == cur.incarnation:
                self._confirm(cur, rec.get("by"))
            elif state == ALIVE and inc == cur.incarnation and cur.state == ALIVE:
                cur.last_seen = max(cur.last_seen, now)
            return
        if from_sync and state == DEAD and cur.state == ALIVE:
            # memberlist's rule: a full-state dead about someone we think alive is only a
            # suspicion, so a stale view from the other side of a partition cannot kill
            # members that are fine; they get time to refute.
            state, rec = SUSPECT, {**rec, "state": SUSPECT}
        old_state, old_addr = cur.state, cur.address
        cur.incarnation = inc
        cur.address = rec["addr"]
        if state != old_state:
            self._set_state(cur, state, now)
        elif cur.address != old_addr:
            cur.last_change = now
            self._emit(cur, old_state)
        if state == ALIVE:
            cur.last_seen = now
            self._suspicions.pop(mid, None)
        elif state == SUSPECT:
            # a full-state record does not name its suspecter: use the suspect's own id as a
            # placeholder, which can never count as an independent confirmation
            self._start_suspicion(cur, rec.get("by") or mid, now)
        else:
            self._suspicions.pop(mid, None)
        self._queue.push(self._record(cur, rec.get("by")))

    def _start_suspicion(self, m: Member, by: str, now: float) -> None:
        n = self._live_count()
        low, high = suspicion_timeouts(self.config, n)
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        s = Suspicion(now, low, high, k)
        s.confirm(by)
        self._suspicions[m.id] = s

    def _confirm(self, m: Member, by: str | None) -> None:
        s = self._suspicions.get(m.id)
        if s and by and s.confirm(by):
            self._queue.push(self._record(m, by))

    def _suspect(self, member_id: str, now: float) -> None:
        """Our own probe failed."""
        m = self._members.get(member_id)
        if m is None:
            return
        if m.state == ALIVE:
            self._apply({**self._record(m), "state": SUSPECT, "by": self.self_id}, now)
        elif m.state == SUSPECT:
            self._confirm(m, self.self_id)

    def _expire_suspicions(self, now: float) -> None:
        for mid, s in list(self._suspicions.items()):
            m = self._members.get(mid)
            if m is None or m.state != SUSPECT:
                self._suspicions.pop(mid, None)
            elif now >= s.deadline():
                self._apply({**self._record(m), "state": DEAD, "by": self.self_id}, now)

    def _merge_state(self, records: list[dict[str, Any]], now: float) -> None:
        for rec in records:
            self._apply(rec, now, from_sync=True)

    # ----------------------------------------------------------------- probing

    def _next_target(self) -> Member | None:
        for _ in range(2):
            while self._probe_order:
                m = self._members.get(self._probe_order.pop())
                if m and m.id != self.self_id and m.state in (ALIVE, SUSPECT):
                    return m
            self._probe_order = [m.id for m in self._others((ALIVE, SUSPECT))]
            self._rng.shuffle(self._probe_order)
        return None

    def _probe_round(self, now: float) -> list[Outgoing]:
        p = self._probe
        if p and not p.acked:
            self._suspect(p.target, now)
        self._probe = None
        step = self.config.probe_interval
        self._next_probe = max(self._next_probe + step, now + step / 2)
        target = self._next_target()
        if target is None:
            return []
        self._seq += 1
        self._probe = _Probe(self._seq, target.id, target.address, now)
        ping = self._msg("ping", seq=self._seq, target=target.id)
        if target.state == SUSPECT:
            # Lifeguard's buddy system: tell a suspect directly so it can refute at once
            ping["updates"] = [self._record(target, self.self_id), *ping["updates"]][
                : self.config.max_piggyback]
        return [(target.address, ping)]

    def _send_indirect(self, now: float) -> list[Outgoing]:
        p = self._probe
        assert p is not None
        p.indirect_sent = True
        helpers = [m for m in self._others((ALIVE,)) if m.id != p.target]
        chosen = self._rng.sample(helpers, min(self.config.indirect_checks, len(helpers)))
        return [(h.address, self._msg("ping-req", seq=p.seq, target=p.target,
                                      target_addr=p.address)) for h in chosen]

    def _on_ack(self, m: Message, now: float) -> list[Outgoing]:
        p = self._probe
        if p and m["seq"] == p.seq:
            p.acked = True
            target = self._members.get(p.target)
            if target:
                target.last_seen = now
            return []
        relay = self._relays.pop(m["seq"], None)
        if relay:
            return [(relay[0], self._msg("ack", seq=relay[1]))]
        return []

    # ----------------------------------------------------------------- anti-entropy

    def _sync_timers(self, now: float) -> list[Outgoing]:
        cfg = self.config
        out: list[Outgoing] = []
        if now < min(self._next_join, self._next_push_pull, self._next_reconnect):
            return out
        live = self._others((ALIVE, SUSPECT))
        if now >= self._next_join:
            self._next_join = now + cfg.join_retry_interval
            if not live and self._seeds:
                out += [(s, self._full_state("sync")) for s in self._seeds]
        if now >= self._next_push_pull:
            self._next_push_pull = now + cfg.push_pull_interval * (0.75 + self._rng.random() / 2)
            if live:
                peer = self._rng.choice([m for m in live if m.state == ALIVE] or live)
                out.append((peer.address, self._full_state("sync")))
        if now >= self._next_reconnect:
            self._next_reconnect = now + cfg.reconnect_interval
            dead = sorted({m.address for m in self._others((DEAD,))} - {self.address})
            if dead:
                out.append((self._rng.choice(dead), self._full_state("sync")))
        return out

    def _reap(self, now: float) -> None:
        limit = self.config.reap_timeout
        for m in self._others((DEAD, LEFT)):
            if now - m.last_change > limit:
                del self._members[m.id]
        self._removed = {k: v for k, v in self._removed.items() if now - v[1] <= limit}
