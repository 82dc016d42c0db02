"""Many-node simulations of the membership core (seeded, deterministic, a few seconds each)."""

from __future__ import annotations

import math

import pytest

from p2pstore.core.membership import MembershipConfig, suspicion_timeouts
from tests.support.simnet import SimNet, measure_dissemination

CFG = MembershipConfig()


def dead_bound_periods(n: int) -> float:
    """Worst-case periods from a crash until every live node marks it dead.

    detect: with n-1 probers each probing the victim with probability ~1/(n-1) per period, the
        first failed probe comes within 8 periods except with probability ~e^-8; +1 period for
        the probe itself to end (ping, probe_timeout, ping-req, end of period).
    suspect: the first suspecter's timer runs at most max = 6 * 4 * log10(n) periods (no
        confirmations at all; with k=2 confirmations it is 4 * log10(n), 6.8 for n=50).
    spread: the "dead" update then reaches everyone within 2 * log2(n) periods (measured
        dissemination is ~log2(n) / 1.5; see docs/protocols.md).
    For n=50: 8 + 1 + 40.8 + 11.3 = 61.1 periods.
    """
    _, s_max = suspicion_timeouts(CFG, n)
    return 8 + 1 + s_max / CFG.probe_interval + 2 * math.log2(n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crashed_member_declared_dead_everywhere_within_bound(seed: int) -> None:
    sim = SimNet(50, seed, election=False)
    sim.run_for(5.0)
    sim.kill("n7")
    t0 = sim.now
    bound = dead_bound_periods(50) * CFG.probe_interval
    done = sim.run_until(lambda: all(sim.state_of(n.id, "n7") == "dead" for n in sim.live()),
                         t0 + bound)
    assert done is not None, f"n7 not dead everywhere within {bound:.1f}s"
    # with many independent probers the confirmations arrive fast, so the typical time is far
    # below the worst case: min suspicion 6.8 periods + detection + spread
    assert done - t0 < 30.0
    # nobody else was ever declared dead
    wrong = [e for _, _, e in sim.member_events if e.new_state == "dead" and e.id != "n7"]
    assert not wrong


@pytest.mark.parametrize("seed", [0, 1])
def test_no_false_deaths_with_five_percent_loss(seed: int) -> None:
    """200 periods, 50 nodes, 5 % loss on every message: suspicions happen, deaths must not."""
    sim = SimNet(50, seed, election=False, loss=0.05)
    sim.run_for(200 * CFG.probe_interval)
    deaths = [(t, obs, e) for t, obs, e in sim.member_events if e.new_state in ("dead", "left")]
    assert not deaths, deaths[:5]
    for node in sim.live():
        assert node.membership.state_of("n0") in ("alive", "suspect")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dissemination_is_logarithmic(seed: int) -> None:
    """A membership change reaches all 100 nodes within 2*log2(N) ≈ 13.3 periods."""
    delays = measure_dissemination(100, seed)
    assert delays[-1] <= 2 * math.log2(100), delays[-5:]


@pytest.mark.parametrize(("seed", "new_address"), [(0, None), (1, "n3-moved.sim:7100"),
                                                    (2, "n3-moved.sim:7100")])
def test_restarted_node_is_alive_again_everywhere(seed: int, new_address: str | None) -> None:
    sim = SimNet(10, seed, election=False)
    sim.run_for(3.0)
    sim.kill("n3")
    assert sim.run_until(lambda: all(sim.state_of(n.id, "n3") == "dead" for n in sim.live()),
                         sim.now + 60) is not None
    old_inc = max(n.membership.member("n3").incarnation for n in sim.live())  # type: ignore[union-attr]
    node = sim.restart("n3", address=new_address)
    want = new_address or "n3.sim:7000"

    def everywhere_alive() -> bool:
        for n in sim.live():
            m = n.membership.member("n3")
            if m is None or m.state != "alive" or m.address != want:
                return False
        return True

    assert sim.run_until(everywhere_alive, sim.now + 15) is not None
    assert node.membership.incarnation > old_inc


@pytest.mark.parametrize("seed", [0, 1])
def test_graceful_leave_shows_left_everywhere(seed: int) -> None:
    sim = SimNet(10, seed, election=False)
    sim.run_for(3.0)
    sim.leave("n4")
    assert sim.run_until(lambda: all(sim.state_of(n.id, "n4") == "left" for n in sim.live()),
                         sim.now + 5) is not None
    sim.run_for(30.0)  # stays left; it is never resurrected as suspect/dead
    assert all(sim.state_of(n.id, "n4") == "left" for n in sim.live())
    assert all("n4" not in n.membership.voter_ids() for n in sim.live())


@pytest.mark.parametrize("seed", [0, 1])
def test_join_through_a_seed(seed: int) -> None:
    sim = SimNet(20, seed, election=False, bootstrap="seeds")
    ids = set(sim.nodes)

    def converged() -> bool:
        return all(set(n.view()) == ids and set(n.view().values()) == {"alive"}
                   for n in sim.live())

    assert sim.run_until(converged, 20.0) is not None
    sim.add_node("late", seeds=["n5.sim:7000"])
    ids.add("late")
    assert sim.run_until(converged, sim.now + 20.0) is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_partition_heals_by_itself(seed: int) -> None:
    """Two halves declare each other dead, then re-merge via reconnect syncs and refutation."""
    sim = SimNet(20, seed, election=False)
    sim.run_for(3.0)
    left, right = [f"n{i}" for i in range(10)], [f"n{i}" for i in range(10, 20)]
    sim.partition(left, right)
    assert sim.run_until(
        lambda: all(sim.state_of("n0", r) == "dead" for r in right)
        and all(sim.state_of("n10", x) == "dead" for x in left), sim.now + 120) is not None
    sim.heal()
    t0 = sim.now
    done = sim.run_until(lambda: all(set(v.values()) == {"alive"} for v in sim.views().values()),
                         t0 + 90)
    assert done is not None, "partition did not heal"


def test_same_seed_replays_identically() -> None:
    def run(seed: int) -> tuple[list[tuple[float, str, str, str]], set[tuple[int, str]], int]:
        sim = SimNet(8, seed, loss=0.1)
        sim.run_for(5.0)
        sim.kill("n2")
        sim.run_for(20.0)
        events = [(t, obs, e.id, e.new_state) for t, obs, e in sim.member_events]
        return events, sim.leader_history, sim.messages_sent

    assert run(5) == run(5)
    assert run(5) != run(6)
