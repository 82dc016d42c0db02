"""The membership and election cores at 1,000 nodes (what fits CI; benchmarks/sim_scale.py
prints the 1,000- and 2,000-node table of docs/protocols.md). One seed each, deterministic.
The lossy and stalled runs last 20 periods (to fit CI's budget), which outlast the shortest
suspicion timeout at this size (4 log10 N = 12 periods)."""

from __future__ import annotations

import math

from p2pstore.core.membership import MembershipConfig, suspicion_timeouts
from tests.support import simscale

N = 1000
CFG = MembershipConfig()


def test_a_crash_is_known_everywhere_within_the_bound_and_kills_nobody_else() -> None:
    run = simscale.failure_known_everywhere(N, 0, wire=False)
    # detection (9 periods) + the longest suspicion timer + 2 log2 N to spread: 101 periods
    bound = 9 + suspicion_timeouts(CFG, N)[1] / CFG.probe_interval + 2 * math.log2(N)
    assert run.periods is not None and run.periods < bound, run
    # confirmations from many probers cut the timer to its minimum, 4 log10 N = 12 periods
    assert run.periods < 40, run
    assert run.wrong_deaths == 0
    # each node sends one probe per period plus its share of ack traffic: ~2 messages, not N
    assert 1.5 < run.msgs_per_node_period < 4, run


def test_an_update_reaches_every_node_in_about_log2_n_periods() -> None:
    assert simscale.update_reaches_all(N, 0) < 2 * math.log2(N)


def test_five_percent_loss_declares_nobody_dead() -> None:
    assert simscale.false_deaths_with_loss(N, 0, periods=20) == 0


def test_a_stalled_node_is_not_declared_dead_and_blames_nobody() -> None:
    assert simscale.false_deaths_with_a_stall(N, 0, periods=20) == 0


def test_one_leader_is_elected_and_stays() -> None:
    run = simscale.election_converges(N, 0, hold=5)
    assert run.periods is not None and run.periods < 30, run
    assert run.terms_with_two_leaders == 0 and run.leader_changes_after == 0, run
