"""Read leases (core/leases.py): grants, reports, revocation, and a simulation showing that a
replica reading under its leases never misses an acknowledged write."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from p2pstore.core.leases import (
    EVERY_REPLICA,
    IDLE_LEASES,
    LeaseGrantor,
    LeaseHolder,
    holders_to_wait_for,
)

D = 2.0
RING = "ring-1"


def test_blanket_after_start_then_only_granted_holders_are_reported() -> None:
    g = LeaseGrantor(D, now=100.0, backoff=10.0)
    assert g.report(["a", "b", "c"], RING, 100.5) == {EVERY_REPLICA: 1.5}
    assert g.report(["a", "b", "c"], RING, 102.0) == {}
    assert g.grant("b", RING, RING, 103.0) == {"duration": D, "continued": False}
    assert g.report(["a", "b", "c"], RING, 103.5) == {"b": 1.5}
    assert g.report(["a", "c", "d"], RING, 103.5) == {}, "b does not replicate that key"
    assert g.report(["a", "b", "c"], RING, 105.0) == {}, "expired"


def test_renewal_is_continued_only_while_the_grant_runs_unrevoked_under_the_same_ring() -> None:
    g = LeaseGrantor(D, now=0.0, backoff=10.0)
    assert not g.grant("b", RING, RING, 10.0)["continued"]
    assert g.grant("b", RING, RING, 11.0)["continued"]
    assert not g.grant("b", RING, RING, 14.0)["continued"], "lapsed in between"
    assert g.grant("b", "ring-0", RING, 14.5) is None, "the holder sees another placement"
    assert not g.grant("b", "ring-2", "ring-2", 15.0)["continued"], "placement changed"


def test_a_grant_from_an_older_ring_is_reported_for_every_key() -> None:
    g = LeaseGrantor(D, now=0.0, backoff=10.0)
    g.grant("b", RING, RING, 10.0)
    assert g.report(["x", "y", "z"], "ring-2", 10.5) == {"b": 1.5}


def test_revocation_keeps_the_promise_but_refuses_renewal_until_the_backoff_passed() -> None:
    g = LeaseGrantor(D, now=0.0, backoff=10.0)
    g.grant("b", RING, RING, 10.0)
    assert g.revoke("b", 10.5) == 1.5
    assert g.report(["a", "b"], RING, 11.0) == {"b": 1.0}, "still promised until it runs out"
    assert g.grant("b", RING, RING, 11.0) is None
    assert g.grant("b", RING, RING, 20.4) is None
    answer = g.grant("b", RING, RING, 20.6)
    assert answer is not None and not answer["continued"]
    g.expire(30.0)
    assert not g.grants and not g.refuse_until


def test_revocation_during_the_blanket_covers_the_blanket() -> None:
    g = LeaseGrantor(D, now=0.0, backoff=10.0)
    assert g.revoke("b", 0.5) == 1.5


def test_holder_counts_a_lease_only_after_a_sync_under_the_same_lease() -> None:
    h = LeaseHolder(D)
    assert h.granted("g", RING, {"duration": D, "continued": False}, sent_at=0.0)
    epoch = h.epoch("g")
    assert epoch is not None and not h.covers(["g"], RING, 0.1)
    h.synced("g", epoch)
    assert h.covers(["g"], RING, 0.1)
    assert not h.covers(["g"], RING, D * 0.96), "ends early by the drift margin"
    assert not h.covers(["g", "k"], RING, 0.1), "no lease from k"
    assert not h.covers(["g"], "ring-2", 0.1)
    # a continued renewal keeps the sync; a new lease needs another
    assert not h.granted("g", RING, {"duration": D, "continued": True}, sent_at=1.0)
    assert h.covers(["g"], RING, 2.5)
    assert h.granted("g", RING, {"duration": D, "continued": False}, sent_at=2.0)
    assert not h.covers(["g"], RING, 2.5)
    h.synced("g", epoch)  # a sync that started under the old lease does not count
    assert not h.covers(["g"], RING, 2.5)
    h.refused("g")
    assert h.epoch("g") is None


def test_holder_never_trusts_a_longer_lease_than_its_own_setting() -> None:
    h = LeaseHolder(1.0)
    h.granted("g", RING, {"duration": 60.0, "continued": False}, sent_at=0.0)
    h.synced("g", h.epoch("g") or 0)
    assert not h.covers(["g"], RING, 1.0)


def test_holder_wants_leases_only_for_a_while_after_its_last_read() -> None:
    h = LeaseHolder(D)
    assert not h.wanted(0.0), "a node that served no read asks for no lease"
    assert h.want(1.0), "the first read after a quiet spell: ask at once"
    assert h.wanted(1.0) and h.wanted(1.0 + IDLE_LEASES * D - 0.01)
    assert not h.want(2.0), "reads in a row: the usual renewals suffice"
    assert h.wanted(2.0 + IDLE_LEASES * D - 0.01)
    assert not h.wanted(2.0 + IDLE_LEASES * D)
    assert h.want(2.0 + IDLE_LEASES * D)


def test_holders_to_wait_for_takes_the_latest_deadline_and_expands_the_blanket() -> None:
    reports = [({"c": 1.0}, 10.0), ({"c": 0.5, EVERY_REPLICA: 2.0}, 10.2)]
    assert holders_to_wait_for(reports, ["a", "b", "c"], ["a", "b"]) == {"c": 12.2}
    assert holders_to_wait_for([({"c": 1.0}, 10.0)], ["a", "b", "c"], ["a", "c"]) == {}


# ---- simulation: 3 replicas of one key, random schedules, the coordinator rule of the shell ----
NODES = ("a", "b", "c")
W = 2


@dataclass
class Sim:
    now: float = 0.0
    grantors: dict[str, LeaseGrantor] = field(default_factory=dict)
    holders: dict[str, LeaseHolder] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NODES, 0))
    acked: int = 0  # newest version acknowledged to a client
    next_version: int = 0
    pending: list[tuple[float, int]] = field(default_factory=list)  # (acknowledged at, version)
    lease_reads: int = 0

    def __post_init__(self) -> None:
        for n in NODES:
            self.restart(n)

    def restart(self, n: str) -> None:
        self.grantors[n] = LeaseGrantor(D, self.now, backoff=5 * D)
        self.holders[n] = LeaseHolder(D)

    def advance(self, dt: float) -> None:
        self.now += dt
        self.answer_clients()

    def answer_clients(self) -> None:
        for at, version in [p for p in self.pending if p[0] <= self.now]:
            self.pending.remove((at, version))
            self.acked = max(self.acked, version)

    def renew(self, holder: str, grantor: str, delay: float) -> None:
        answer = self.grantors[grantor].grant(holder, RING, RING, self.now + delay)
        if answer is None:
            self.holders[holder].refused(grantor)
        else:
            self.holders[holder].granted(grantor, RING, answer, sent_at=self.now)

    def sync(self, holder: str, grantor: str) -> None:
        epoch = self.holders[holder].epoch(grantor)
        if epoch is not None:
            self.stored[holder] = max(self.stored[holder], self.stored[grantor])
            self.holders[holder].synced(grantor, epoch)

    def write(self, failing: set[str]) -> None:
        """The shell's rule: W acks; every reported leaseholder acked, or was revoked at a
        reporter and the answer waits until that promise ran out."""
        self.next_version += 1
        version = self.next_version
        acks = []
        for n in NODES:
            if n not in failing:
                self.stored[n] = max(self.stored[n], version)
                acks.append((n, self.grantors[n].report(NODES, RING, self.now), self.now))
        if len(acks) < W:
            return  # not acknowledged (outcome unknown: the copies that landed stay)
        waits = holders_to_wait_for([(r, t) for _, r, t in acks], NODES, [n for n, _, _ in acks])
        answer_at = self.now
        for holder in waits:
            reporters = [n for n, r, _ in acks if holder in r or EVERY_REPLICA in r]
            left = min(self.grantors[n].revoke(holder, self.now) for n in reporters)
            answer_at = max(answer_at, self.now + left)
        self.pending.append((answer_at, version))
        self.answer_clients()

    def read(self, holder: str) -> None:
        others = [n for n in NODES if n != holder]
        if self.holders[holder].covers(others, RING, self.now):
            self.lease_reads += 1
            assert self.stored[holder] >= self.acked, (
                f"{holder} read version {self.stored[holder]} under its leases, "
                f"but {self.acked} was acknowledged"
            )


    def renew_and_sync(self, holder: str, delay: float) -> None:
        """The shell's holder loop: ask both other replicas; sync with a grantor whose lease is new."""
        for grantor in NODES:
            if grantor != holder:
                self.renew(holder, grantor, delay)
                held = self.holders[holder].held.get(grantor)
                if held is not None and not held.synced:
                    self.sync(holder, grantor)


node = st.sampled_from(NODES)
step = st.tuples(
    st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.8, 1.2, 2.1]),  # time passing
    st.sets(node),  # replicas renewing their leases now
    st.sampled_from([0.0, 0.05, 0.3]),  # how long a lease request takes to reach its grantor
    st.none() | st.sets(node, max_size=2),  # a write, failing on these replicas
    st.none() | node,  # a restart
)


def run(steps: list[tuple]) -> Sim:
    sim = Sim()
    for dt, renewers, delay, failing, restart in steps:
        sim.advance(dt)
        if restart is not None:
            sim.restart(restart)
        for holder in sorted(renewers):
            sim.renew_and_sync(holder, delay)
        if failing is not None:
            sim.write(failing)
        for n in NODES:
            sim.read(n)
    return sim


@settings(max_examples=500, deadline=None)
@given(st.lists(step, min_size=1, max_size=40))
@example([(2.1, {"a"}, 0.0, None, None), (0.5, set(), 0.0, {"a"}, None), (0.5, {"a"}, 0.0, None, None),
          (1.2, set(), 0.0, None, None)])  # a renewal after a missed write: revocation stops it
@example([(2.1, {"a"}, 0.0, None, None), (0.0, set(), 0.0, None, "b"), (0.0, set(), 0.0, {"a"}, "c")])
# both grantors restarted (forgetting their grants) and took a write "a" missed: the blanket
def test_no_lease_read_misses_an_acknowledged_write(steps: list[tuple]) -> None:
    run(steps)


def test_the_simulation_reads_under_leases_and_would_catch_a_missing_revocation() -> None:
    sim = Sim()
    sim.advance(D)  # the start-up blankets run out
    for h in NODES:
        for g in NODES:
            if h != g:
                sim.renew(h, g, 0.0)
                sim.sync(h, g)
    sim.read("a")
    assert sim.lease_reads == 1
    # a write that "a" fails: with the coordinator's rule, "a" loses its lease before the answer
    sim.write({"a"})
    sim.renew("a", "b", 0.0)
    sim.renew("a", "c", 0.0)
    sim.advance(D)
    sim.read("a")  # no longer covered: quorum reads instead
    assert sim.acked == 1 and sim.lease_reads == 1
    # without revocation the renewals would have kept "a" reading its old copy
    broken = Sim()
    broken.advance(D)
    for g in ("b", "c"):
        broken.renew("a", g, 0.0)
        broken.sync("a", g)
    broken.stored["b"] = broken.stored["c"] = broken.acked = 1
    broken.renew("a", "b", 0.0)
    broken.renew("a", "c", 0.0)
    try:
        broken.read("a")
    except AssertionError:
        return
    raise AssertionError("the simulation's check did not catch a stale lease read")


async def test_lease_syncs_run_one_at_a_time_and_a_hung_one_does_not_block_the_rest(monkeypatch) -> None:
    """The shell's exchange before a new lease counts: one grantor at a time, each bounded, so a
    grantor that hangs mid-exchange costs only its own lease. (The exchange itself is replaced
    here: making a real node hang at exactly that moment is not deterministic.)"""
    import asyncio
    import time
    from types import SimpleNamespace

    from p2pstore.cluster import leases as shell

    monkeypatch.setattr(shell, "SYNC_LIMIT", 0.3)
    running: list[str] = []
    overlapped = False

    async def sync_manifest_with(address: str) -> int:
        nonlocal overlapped
        overlapped = overlapped or bool(running)
        running.append(address)
        try:
            if address == "hung":
                await asyncio.Event().wait()  # never answers
            await asyncio.sleep(0.01)
            return 0
        finally:
            running.remove(address)

    peers = SimpleNamespace(me="me")
    leases = shell.Leases(peers, None, None, sync_manifest_with, 3, 0.05)  # type: ignore[arg-type]
    now = time.monotonic()
    for grantor in ("h", "a", "b"):
        leases.holder.granted(grantor, RING, {"duration": 0.05, "continued": False}, sent_at=now + 60)
    started = time.monotonic()
    pairs = (("h", "hung"), ("a", "addr-a"), ("b", "addr-b"))
    syncs = asyncio.gather(*(leases._sync(grantor, address) for grantor, address in pairs))
    await asyncio.wait_for(syncs, 5)  # a regression fails here instead of hanging
    assert time.monotonic() - started < 2
    assert not overlapped, "one exchange at a time"
    held = leases.holder.held
    assert not held["h"].synced and held["a"].synced and held["b"].synced
