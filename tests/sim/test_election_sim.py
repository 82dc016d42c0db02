"""Simulated elections under partitions, crashes and rejoins; safety checked over full history."""

from __future__ import annotations

import pytest

from p2pstore.core.election import ElectionConfig
from tests.support.simnet import SimNet

E = ElectionConfig()
ALL = [f"n{i}" for i in range(5)]

# Majority side elects within: lease (followers refuse while they still trust the old leader)
# is covered by the election timeout (>= lease); worst case one full random timeout plus one
# retry after a split vote, plus pre-vote + vote round trips (tens of ms) and one tick.
MAJORITY_ELECT_BOUND = 2 * E.election_timeout_max + E.heartbeat_interval + 0.5  # 7.0 s
# Minority side has no leader after: the old leader steps down when its lease (acks from a
# majority of heartbeats sent < lease ago) lapses: <= lease + heartbeat + tick; its followers
# drop the leader when their election timer fires: <= election_timeout_max after the last
# heartbeat they received.
MINORITY_NO_LEADER_BOUND = E.lease_duration + E.heartbeat_interval + E.election_timeout_max + 0.2


def agreed_leader(sim: SimNet, ids: list[str]) -> str | None:
    """The single leader every node in `ids` follows in the same term, else None."""
    views = sim.leaders(ids)
    acting = sim.acting_leaders(ids)
    if len(views) != len(ids) or len(set(views.values())) != 1 or len(acting) != 1:
        return None
    _term, leader = next(iter(views.values()))
    return leader if leader == acting[0] else None


def test_stable_cluster_elects_exactly_one_leader() -> None:
    sim = SimNet(5, 0)
    assert sim.run_until(lambda: agreed_leader(sim, ALL) is not None, 10.0) is not None
    term = sim.leaders(ALL)["n0"][0]
    sim.run_for(60.0)
    assert agreed_leader(sim, ALL) is not None
    assert sim.leaders(ALL)["n0"][0] == term, "a healthy leader was deposed"
    sim.assert_election_safety()


@pytest.mark.parametrize("seed", range(20))
def test_partition_3_2_then_heal(seed: int) -> None:
    sim = SimNet(5, seed)
    assert sim.run_until(lambda: agreed_leader(sim, ALL) is not None, 15.0) is not None
    leader = agreed_leader(sim, ALL)
    others = [n for n in ALL if n != leader]
    sim.rng.shuffle(others)
    if seed % 2 == 0:  # the hard case: the old leader ends up in the minority
        minority, majority = [leader, others[0]], others[1:]
    else:
        minority, majority = others[:2], [leader, *others[2:]]
    sim.partition(minority, majority)
    t0 = sim.now

    took = sim.run_until(lambda: agreed_leader(sim, majority) is not None,
                         t0 + MAJORITY_ELECT_BOUND)
    assert took is not None, f"majority did not elect within {MAJORITY_ELECT_BOUND}s"

    sim.run_for(max(0.0, t0 + MINORITY_NO_LEADER_BOUND - sim.now))

    def minority_leaderless() -> None:
        for node_id, (_term, believed) in sim.leaders(minority).items():
            assert believed is None, f"{node_id} still follows {believed}"
        assert not sim.acting_leaders(minority)
        for node_id in minority:
            assert not sim.nodes[node_id].election.lease_valid(sim.now)  # type: ignore[union-attr]

    minority_leaderless()
    sim.run_for(40.0, every=minority_leaderless)  # long enough for both sides to see deaths
    assert sim.state_of(majority[0], minority[0]) == "dead"

    sim.heal()

    def healed() -> bool:
        if agreed_leader(sim, ALL) is None:
            return False
        return all(set(v.values()) == {"alive"} and len(v) == 5 for v in sim.views().values())

    assert sim.run_until(healed, sim.now + 60.0) is not None
    sim.assert_election_safety()


@pytest.mark.parametrize("seed", range(5))
def test_leader_crash_new_leader(seed: int) -> None:
    sim = SimNet(5, seed)
    assert sim.run_until(lambda: agreed_leader(sim, ALL) is not None, 15.0) is not None
    old = agreed_leader(sim, ALL)
    assert old is not None
    sim.kill(old)
    rest = [n for n in ALL if n != old]
    assert sim.run_until(lambda: agreed_leader(sim, rest) is not None,
                         sim.now + MAJORITY_ELECT_BOUND) is not None
    # the crashed leader restarts with its persisted hard state and becomes a follower
    sim.restart(old)
    assert sim.run_until(lambda: agreed_leader(sim, ALL) is not None, sim.now + 20.0) is not None
    sim.assert_election_safety()


@pytest.mark.parametrize("seed", range(5))
def test_isolated_follower_does_not_disrupt_on_return(seed: int) -> None:
    """Pre-vote + lease: a node cut off for a long time returns without forcing an election."""
    sim = SimNet(5, seed)
    assert sim.run_until(lambda: agreed_leader(sim, ALL) is not None, 15.0) is not None
    leader = agreed_leader(sim, ALL)
    term = sim.leaders(ALL)[leader][0]  # type: ignore[index]
    loner = next(n for n in ALL if n != leader)
    sim.partition([loner], [n for n in ALL if n != loner])
    sim.run_for(30.0)
    assert sim.nodes[loner].election.term == term  # type: ignore[union-attr]  # no inflation
    sim.heal()
    assert sim.run_until(lambda: agreed_leader(sim, ALL) == leader, sim.now + 10.0) is not None
    assert sim.leaders(ALL)[leader][0] == term
    sim.assert_election_safety()


@pytest.mark.parametrize("seed", range(3))
def test_lossy_network_keeps_safety(seed: int) -> None:
    """20 % loss and one-way links: elections may churn, but never two leaders per term."""
    sim = SimNet(5, seed, loss=0.2)
    sim.set_link_loss("n0", "n1", 1.0)
    sim.set_link_loss("n2", "n3", 1.0)
    sim.run_for(120.0)
    sim.assert_election_safety()
    assert sim.leaders_by_term(), "no leader was ever elected"
