"""Large-cluster figures from the deterministic simulator (tests/support/simnet.py).

Shared by tests/sim/test_scale_sim.py (1,000 nodes, what fits CI) and
benchmarks/sim_scale.py (1,000 and 2,000 nodes, the table in docs/protocols.md). Times are in
probe periods (``probe_interval``; the node's ``--gossip-interval``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from p2pstore.core.membership import DEAD, LEFT
from tests.support.simnet import SimNet, measure_dissemination

WARMUP = 5.0  # seconds: the first full-state syncs of a freshly built cluster are over


def _deaths(sim: SimNet, since: float, except_id: str | None = None) -> int:
    """Dead or left events about members other than ``except_id`` after ``since``."""
    return sum(1 for t, _, e in sim.member_events
               if t >= since and e.new_state in (DEAD, LEFT) and e.id != except_id)  # fmt: skip


@dataclass
class FailureRun:
    periods: float | None  # crash -> dead in every live node's table (None: not within the deadline)
    wrong_deaths: int  # dead events about any other member meanwhile
    msgs_per_node_period: float  # steady state, before the crash
    bytes_per_node_period: float


def failure_known_everywhere(
    n: int, seed: int, deadline_periods: float = 200.0, wire: bool = True
) -> FailureRun:
    """Crash one node of an idle cluster; periods until every other node has it dead. ``wire``:
    messages round-trip through msgpack and their bytes are counted (slower)."""
    sim = SimNet(n, seed, election=False, wire=wire)
    sim.run_for(WARMUP)
    period = sim.mconfig.probe_interval
    m0, b0, t0 = sim.messages_sent, sim.bytes_sent, sim.now
    sim.run_for(10 * period)
    steady = (sim.messages_sent - m0) / n / 10, (sim.bytes_sent - b0) / n / 10
    crashed = "n7"
    sim.kill(crashed)
    t0 = sim.now
    done = sim.run_until(lambda: all(sim.state_of(x.id, crashed) == DEAD for x in sim.live()),
                         t0 + deadline_periods * period, check_every=period / 4)  # fmt: skip
    periods = None if done is None else (done - t0) / period
    return FailureRun(periods, _deaths(sim, 0.0, crashed), *steady)


def update_reaches_all(n: int, seed: int) -> float:
    """Periods until an incarnation bump reached 100 % of the nodes."""
    return measure_dissemination(n, seed)[-1]


def false_deaths_with_loss(n: int, seed: int, loss: float = 0.05, periods: int = 60) -> int:
    """Dead events in an idle cluster where every message is lost with probability ``loss``."""
    sim = SimNet(n, seed, election=False, loss=loss, wire=False)
    sim.run_for(WARMUP + periods * sim.mconfig.probe_interval)
    return _deaths(sim, 0.0)


def false_deaths_with_a_stall(n: int, seed: int, stall_periods: float = 5.0, periods: int = 60) -> int:
    """One node freezes for ``stall_periods`` (less than the suspicion timeout) and resumes: no
    member may be declared dead, neither the frozen one nor any it could not hear from."""
    sim = SimNet(n, seed, election=False, wire=False)
    sim.run_for(WARMUP)
    period = sim.mconfig.probe_interval
    sim.stall("n5", stall_periods * period)
    sim.run_for(periods * period)
    return _deaths(sim, 0.0)


@dataclass
class ElectionRun:
    periods: float | None  # start -> every node follows the same single acting leader
    terms_with_two_leaders: int  # over the whole history (must be 0)
    leader_changes_after: int  # in ``hold`` periods after convergence (a stable leader: 0)


def election_converges(n: int, seed: int, hold: int = 20) -> ElectionRun:
    sim = SimNet(n, seed, wire=False)
    period = sim.mconfig.probe_interval
    ids = list(sim.nodes)

    def agreed() -> bool:
        views = sim.leaders(ids)
        acting = sim.acting_leaders(ids)
        return len(acting) == 1 and set(views.values()) == {(views[acting[0]][0], acting[0])}

    done = sim.run_until(agreed, 120 * period, check_every=period / 2)
    if done is None:
        return ElectionRun(None, 0, 0)
    before = len(sim.leader_history)
    sim.run_for(hold * period)
    two = sum(1 for leaders in sim.leaders_by_term().values() if len(leaders) > 1)
    return ElectionRun(done / period, two, len(sim.leader_history) - before)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    """(result, seconds of CPU-bound wall time)."""
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t
