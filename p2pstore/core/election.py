"""Raft-style leader election (no log) with pre-vote, check-quorum and a leader lease.

Sans-I/O: the shell calls :meth:`Election.tick` on a timer and :meth:`Election.receive` for
every message, passing the current voter ids (all known non-"left" members, dead ones included:
counting the dead keeps Raft's quorum intersection, so a minority partition cannot elect).
Both return ``(dest_node_id, message)`` pairs. The shell MUST persist :meth:`hard_state`
(term, voted_for) durably before sending the returned messages; otherwise a restarted node
could vote twice in one term.

Safety (at most one leader per term) comes from one vote per term and majority quorums over
the voter set. Liveness and non-disruption come from:

* pre-vote: a node first asks "would you vote for me in term+1?" without bumping its term, so a
  node cut off in a minority cannot inflate terms and depose a healthy leader when it returns;
* lease check: a node that heard a leader within ``lease_duration`` refuses (pre-)votes;
* check-quorum: a leader that has no acks from a majority within the lease steps down, so the
  minority side of a partition reports no leader.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from p2pstore.core.messages import (
    Message,
    Outgoing,
    require_bool,
    require_dict,
    require_float,
    require_int,
    require_list,
    require_str,
)

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"
MESSAGE_TYPES = ("pre-vote", "pre-vote-resp", "vote", "vote-resp", "heartbeat", "heartbeat-ack")
MAX_VOTERS = 10_000


@dataclass(frozen=True)
class ElectionConfig:
    """Election tunables (seconds). Keep heartbeat < lease <= election_timeout_min."""

    election_timeout_min: float = 1.5
    """A follower that hears no leader for a random time in [min, max] starts a pre-vote."""
    election_timeout_max: float = 3.0
    """Randomization spreads candidates out so split votes are rare."""
    heartbeat_interval: float = 0.5
    """Leader → followers; also renews the lease (3 heartbeats per lease tolerate 2 losses)."""
    lease_duration: float = 1.5
    """Followers refuse votes this long after hearing the leader; the leader's lease is valid
    while a majority acked a heartbeat *sent* less than this long ago."""

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.lease_duration:
            raise ValueError("need 0 < heartbeat_interval < lease_duration")
        if not self.lease_duration <= self.election_timeout_min <= self.election_timeout_max:
            raise ValueError("need lease_duration <= election_timeout_min <= election_timeout_max")


@dataclass(frozen=True)
class LeaderChanged:
    """This node's idea of the leader changed (leader is None when there is none)."""

    term: int
    leader: str | None


def validate_message(msg: object) -> Message:
    """Check a decoded election message; return a normalized copy or raise ValueError."""
    raw = require_dict(msg)
    kind = raw["type"]
    if kind not in MESSAGE_TYPES:
        raise ValueError(f"unknown election message type {kind!r}")
    out: Message = {"type": kind, "term": require_int(raw, "term")}
    if kind in ("pre-vote-resp", "vote-resp"):
        out["granted"] = require_bool(raw, "granted")
        voters = require_list(raw, "voters", max_len=MAX_VOTERS)
        for v in voters:
            if not isinstance(v, str) or not v or len(v) > 256:
                raise ValueError("'voters' must be a list of non-empty strings")
        out["voters"] = list(voters)
    if kind in ("pre-vote-resp",):
        out["voter_term"] = require_int(raw, "voter_term")
    if kind in ("heartbeat", "heartbeat-ack"):
        out["seq"] = require_int(raw, "seq")
    if kind == "heartbeat":
        out["lease"] = require_float(raw, "lease", high=3600.0)
    if kind in ("pre-vote", "vote"):
        out["candidate"] = require_str(raw, "candidate")
    return out


class Election:
    """Leader election state machine of one node."""

    def __init__(
        self,
        self_id: str,
        *,
        rng: random.Random,
        now: float,
        config: ElectionConfig | None = None,
        term: int = 0,
        voted_for: str | None = None,
    ) -> None:
        self.self_id = self_id
        self.config = config or ElectionConfig()
        self._rng = rng
        self.term = term
        self.voted_for = voted_for
        self.role = FOLLOWER
        self.leader: str | None = None
        self._events: list[Any] = []
        self._leader_contact = -1e18  # when we last heard a live leader (follower side)
        self._deadline = now + self._random_timeout()
        self._next_heartbeat = now
        self._hb_seq = 0
        self._hb_sent: dict[int, float] = {}
        self._acked: dict[str, float] = {}  # voter -> send time of the newest acked heartbeat
        self._votes: set[str] = set()
        self._vote_views: set[str] = set()  # union of the voters seen by our granters
        self._campaign_start = now

    # ----------------------------------------------------------------- public API

    def hard_state(self) -> tuple[int, str | None]:
        """(term, voted_for): persist before sending the messages of the same call."""
        return self.term, self.voted_for

    def take_events(self) -> list[Any]:
        """Drain LeaderChanged events."""
        events, self._events = self._events, []
        return events

    def lease_valid(self, now: float) -> bool:
        """Leader only: a majority acked a heartbeat sent within the lease duration.

        While true, a majority of voters refuse to vote for anyone else, so no other leader
        can exist (given bounded clock drift): safe for leader-only reads/duties.
        """
        if self.role != LEADER:
            return False
        return self._lease_count(now) >= self._quorum(self._voter_set)

    def tick(self, now: float, voters: Collection[str]) -> list[Outgoing]:
        """Advance timers: heartbeats and check-quorum (leader), election timeout (others)."""
        self._voter_set = self._voters(voters)
        if self.role == LEADER:
            if self._lease_count(now) < self._quorum(self._voter_set):
                self._become_follower(now, self.term, None)
                return []
            if now >= self._next_heartbeat:
                return self._heartbeat(now)
            return []
        if now >= self._deadline:
            return self._start_pre_vote(now)
        return []

    def receive(self, src_id: str, msg: dict[str, Any], now: float,
                voters: Collection[str]) -> list[Outgoing]:
        """Handle one message. Raises ValueError for malformed input."""
        m = validate_message(msg)
        self._voter_set = self._voters(voters)
        kind, term = m["type"], m["term"]
        if kind == "pre-vote":
            return self._on_pre_vote(src_id, m, now)
        if kind == "vote":
            return self._on_vote(src_id, m, now)
        if kind == "pre-vote-resp":
            return self._on_pre_vote_resp(src_id, m, now)
        if term > self.term:
            # a newer term anywhere: we are stale
            self._become_follower(now, term, src_id if kind == "heartbeat" else None)
        if kind == "vote-resp":
            return self._on_vote_resp(src_id, m, now)
        if kind == "heartbeat":
            return self._on_heartbeat(src_id, m, now)
        if kind == "heartbeat-ack" and self.role == LEADER and term == self.term:
            sent = self._hb_sent.get(m["seq"])
            if sent is not None and src_id in self._voter_set:
                self._acked[src_id] = max(self._acked.get(src_id, sent), sent)
        return []

    # ----------------------------------------------------------------- helpers

    _voter_set: frozenset[str] = frozenset()

    def _voters(self, voters: Collection[str]) -> frozenset[str]:
        return frozenset(voters) | {self.self_id}

    @staticmethod
    def _quorum(voters: Collection[str]) -> int:
        return len(voters) // 2 + 1

    def _random_timeout(self) -> float:
        c = self.config
        return self._rng.uniform(c.election_timeout_min, c.election_timeout_max)

    def _set_leader(self, leader: str | None) -> None:
        if leader != self.leader:
            self.leader = leader
            self._events.append(LeaderChanged(self.term, leader))

    def _become_follower(self, now: float, term: int, leader: str | None) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
        self.role = FOLLOWER
        self._set_leader(leader)
        self._deadline = now + self._random_timeout()

    def _in_lease(self, now: float) -> bool:
        """Did we hear a live leader recently? Then we refuse to help depose it."""
        if self.role == LEADER:
            return True
        return self.leader is not None and now - self._leader_contact < self.config.lease_duration

    def _lease_count(self, now: float) -> int:
        lease = self.config.lease_duration
        acked = sum(1 for v, t in self._acked.items() if v in self._voter_set and now - t < lease)
        return acked + 1  # self

    def _view(self) -> list[str]:
        return sorted(self._voter_set)

    # ----------------------------------------------------------------- campaigning

    def _start_pre_vote(self, now: float) -> list[Outgoing]:
        self.role = PRE_CANDIDATE
        self._set_leader(None)
        self._deadline = now + self._random_timeout()
        self._campaign_start = now
        self._votes = {self.self_id}
        self._vote_views = set(self._voter_set)
        if self._won():
            return self._start_election(now)
        msg = {"type": "pre-vote", "term": self.term + 1, "candidate": self.self_id}
        return [(v, dict(msg)) for v in self._view() if v != self.self_id]

    def _start_election(self, now: float) -> list[Outgoing]:
        self.term += 1
        self.voted_for = self.self_id
        self.role = CANDIDATE
        self._deadline = now + self._random_timeout()
        self._campaign_start = now
        self._votes = {self.self_id}
        self._vote_views = set(self._voter_set)
        self._acked = {}
        if self._won():
            return self._become_leader(now)
        msg = {"type": "vote", "term": self.term, "candidate": self.self_id}
        return [(v, dict(msg)) for v in self._view() if v != self.self_id]

    def _won(self) -> bool:
        """Majority of the union of every voter set we saw: guards against a small stale view."""
        return len(self._votes & self._vote_views) >= self._quorum(self._vote_views)

    def _become_leader(self, now: float) -> list[Outgoing]:
        self.role = LEADER
        self._set_leader(self.self_id)
        # votes count as acks of a heartbeat sent when the campaign started
        self._acked = {v: self._campaign_start for v in self._votes if v != self.self_id}
        self._hb_sent = {}
        return self._heartbeat(now)

    def _heartbeat(self, now: float) -> list[Outgoing]:
        self._next_heartbeat = now + self.config.heartbeat_interval
        self._hb_seq += 1
        self._hb_sent[self._hb_seq] = now
        horizon = now - 2 * self.config.lease_duration
        self._hb_sent = {s: t for s, t in self._hb_sent.items() if t >= horizon}
        msg = {"type": "heartbeat", "term": self.term, "seq": self._hb_seq,
               "lease": self.config.lease_duration}
        return [(v, dict(msg)) for v in self._view() if v != self.self_id]

    def _grantable(self, candidate: str, now: float) -> bool:
        return candidate in self._voter_set and not self._in_lease(now)

    def _on_pre_vote(self, src: str, m: Message, now: float) -> list[Outgoing]:
        granted = m["term"] > self.term and self._grantable(m["candidate"], now)
        resp = {"type": "pre-vote-resp", "term": m["term"], "granted": granted,
                "voter_term": self.term, "voters": self._view()}
        return [(src, resp)]

    def _on_pre_vote_resp(self, src: str, m: Message, now: float) -> list[Outgoing]:
        if m["voter_term"] > self.term and not m["granted"]:
            self._become_follower(now, m["voter_term"], None)
            return []
        if self.role != PRE_CANDIDATE or m["term"] != self.term + 1 or not m["granted"]:
            return []
        self._votes.add(src)
        self._vote_views |= set(m["voters"])
        return self._start_election(now) if self._won() else []

    def _on_vote(self, src: str, m: Message, now: float) -> list[Outgoing]:
        term, cand = m["term"], m["candidate"]
        if self._in_lease(now) and cand != self.leader:
            # Raft §6 disruption check: ignore without even adopting the term
            return [(src, {"type": "vote-resp", "term": self.term, "granted": False,
                           "voters": self._view()})]
        if term > self.term:
            self._become_follower(now, term, None)
        granted = (term == self.term and self.voted_for in (None, cand)
                   and cand in self._voter_set)
        if granted:
            self.voted_for = cand
            self._deadline = now + self._random_timeout()
        return [(src, {"type": "vote-resp", "term": self.term, "granted": granted,
                       "voters": self._view()})]

    def _on_vote_resp(self, src: str, m: Message, now: float) -> list[Outgoing]:
        if self.role != CANDIDATE or m["term"] != self.term or not m["granted"]:
            return []
        self._votes.add(src)
        self._vote_views |= set(m["voters"])
        return self._become_leader(now) if self._won() else []

    def _on_heartbeat(self, src: str, m: Message, now: float) -> list[Outgoing]:
        ack = {"type": "heartbeat-ack", "term": self.term, "seq": m["seq"]}
        if m["term"] < self.term:
            return [(src, ack)]  # tells a stale leader our newer term: it steps down
        if self.role != FOLLOWER or self.leader != src:
            self._become_follower(now, m["term"], src)
        self._leader_contact = now
        self._deadline = now + self._random_timeout()
        return [(src, ack)]
