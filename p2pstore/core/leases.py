"""Read leases: a replica answers reads from its own copy, without asking the others.

A quorum read costs every GET a lookup on another replica. A lease lets a replica skip it:
holder H asks every other replica G of its keys for a lease; G promises, for its duration, that
a write G acknowledges on a key H replicates is only acknowledged to the client once H has it.
G cannot see the client's answer (any node may coordinate a write), so it tells the coordinator:
every acknowledgement of a write carries G's *report*, the holders of its leases among the key's
replicas and how long each promise still runs. The coordinator then waits for those holders'
own acknowledgements too; a holder that fails or does not answer in time is *revoked* at a
grantor (no renewal until it asks afresh, after a back-off) and the coordinator waits until
that grantor's promise has run out before it answers. So a write acknowledged without H was
acknowledged only after one of H's leases lapsed without renewal.

A holder may read key K locally while it holds a lease from every other replica of K that

* is unexpired on the holder's own clock (it counts from when it *sent* the request, minus a
  margin for clock-rate drift, so it ends before the grantor's promise does),
* was granted under the same placement ring as the holder's current one (replicas of K are the
  same on both sides), and
* is *synced*: a manifest exchange with that grantor started after the lease began. Writes the
  holder missed before its leases (while it was down, partitioned or revoked) are on a write
  quorum, which always includes another replica of K: the exchange brings them in.

A node asks for leases only while it serves reads: for ``IDLE_LEASES`` lease durations after
the last read of a key it replicates. A node that only takes writes holds none, so writes there
wait for their write quorum alone; the first reads after a quiet spell ask the quorum while
the leases are renewed (as after a restart).

A grantor forgets its grants when it restarts, so for one lease duration after start it reports
every replica as a holder (a *blanket*), covering promises made by its previous life. A lease
is *continued* only when the grantor still has its unexpired, unrevoked grant under the same
ring; any other grant is new, and the holder must sync again before reading.

Sans-I/O: callers pass the time (monotonic seconds) and send the messages.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

EVERY_REPLICA = "*"  # in a report: every other replica of the key may hold a lease
DRIFT = 0.05  # holders end their leases this fraction of the duration early (clock-rate drift)
IDLE_LEASES = 5  # a holder keeps asking for this many lease durations after its last read


@dataclass
class Grant:
    ring: str
    until: float  # grantor's clock
    revoked: bool = False


class LeaseGrantor:
    """What this node promised: which holders it must name when it acknowledges a write."""

    def __init__(self, duration: float, now: float, backoff: float) -> None:
        self.duration = duration
        self.backoff = backoff
        self.blanket_until = now + duration  # promises a previous run of this node may have made
        self.grants: dict[str, Grant] = {}
        self.refuse_until: dict[str, float] = {}
        self.revocations = 0

    def grant(self, holder: str, ring: str, my_ring: str, now: float) -> dict | None:
        """A lease (``{"duration", "continued"}``) or None when refused (another ring, or a
        back-off after a revocation)."""
        if ring != my_ring or now < self.refuse_until.get(holder, 0.0):
            return None
        old = self.grants.get(holder)
        continued = old is not None and not old.revoked and old.ring == ring and now < old.until
        self.grants[holder] = Grant(ring, now + self.duration)
        return {"duration": self.duration, "continued": continued}

    def report(self, replicas: Collection[str], my_ring: str, now: float) -> dict[str, float]:
        """Holders a coordinator must wait for on a key with these replicas: {holder: seconds left}.

        A grant made under another ring (placement changed since) is reported whatever the key:
        this node no longer knows which keys that holder replicated then.
        """
        out: dict[str, float] = {}
        if now < self.blanket_until:
            out[EVERY_REPLICA] = self.blanket_until - now
        for holder, g in self.grants.items():
            if g.until > now and (g.ring != my_ring or holder in replicas):
                out[holder] = g.until - now
        return out

    def revoke(self, holder: str, now: float) -> float:
        """Renew no more (until the back-off passes); returns how long the promise still runs."""
        self.revocations += 1
        self.refuse_until[holder] = now + self.backoff
        left = self.blanket_until - now if now < self.blanket_until else 0.0
        g = self.grants.get(holder)
        if g is not None:
            g.revoked = True
            left = max(left, g.until - now)
        return max(0.0, left)

    def expire(self, now: float) -> None:
        """Drop grants and back-offs that have run out (bounded memory)."""
        self.grants = {h: g for h, g in self.grants.items() if g.until > now}
        self.refuse_until = {h: t for h, t in self.refuse_until.items() if t > now}


@dataclass
class Held:
    ring: str
    until: float  # holder's clock
    epoch: int  # bumped on every new (not continued) lease from this grantor
    synced: bool = False


class LeaseHolder:
    """The leases this node holds, and whether they let it read a key locally."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.held: dict[str, Held] = {}
        self._epochs = 0
        self.wanted_until = float("-inf")

    def want(self, now: float) -> bool:
        """A read here could use leases: keep asking for them a while longer. True when they
        were not wanted until now (the caller asks at once rather than at its next round)."""
        idle = now >= self.wanted_until
        self.wanted_until = now + IDLE_LEASES * self.duration
        return idle

    def wanted(self, now: float) -> bool:
        """Whether to keep renewing: a read came within the last ``IDLE_LEASES`` durations."""
        return now < self.wanted_until

    def granted(self, grantor: str, ring: str, answer: dict, sent_at: float) -> bool:
        """Record a grant for a request sent at ``sent_at``; True when a sync with the grantor
        must now run (a new lease) before it counts."""
        duration = min(float(answer["duration"]), self.duration)
        until = sent_at + duration * (1.0 - DRIFT)
        old = self.held.get(grantor)
        if answer.get("continued") and old is not None and old.ring == ring:
            old.until = until
            return not old.synced
        self._epochs += 1
        self.held[grantor] = Held(ring, until, self._epochs)
        return True

    def refused(self, grantor: str) -> None:
        self.held.pop(grantor, None)

    def epoch(self, grantor: str) -> int | None:
        held = self.held.get(grantor)
        return held.epoch if held else None

    def synced(self, grantor: str, epoch: int) -> None:
        """A manifest exchange with ``grantor``, started under lease ``epoch``, completed."""
        held = self.held.get(grantor)
        if held is not None and held.epoch == epoch:
            held.synced = True

    def covers(self, others: Iterable[str], ring: str, now: float) -> bool:
        """True when this node may answer a read of a key whose other replicas are ``others``."""
        for node_id in others:
            held = self.held.get(node_id)
            if held is None or not held.synced or held.ring != ring or now >= held.until:
                return False
        return True

    def valid(self, ring: str, now: float) -> list[str]:
        """Grantors whose leases count now (the status page)."""
        return sorted(g for g, h in self.held.items() if h.synced and h.ring == ring and now < h.until)


def holders_to_wait_for(
    reports: Iterable[tuple[dict[str, float], float]], replicas: Collection[str], acked: Collection[str]
) -> dict[str, float]:
    """From the reports carried by acknowledgements (each with the coordinator's time it arrived):
    {holder: deadline} for every replica that holds a lease and has not acknowledged yet."""
    out: dict[str, float] = {}
    for report, received in reports:
        for holder, left in report.items():
            names = [r for r in replicas if r not in acked] if holder == EVERY_REPLICA else [holder]
            for name in names:
                if name not in acked:
                    out[name] = max(out.get(name, 0.0), received + float(left))
    return out
