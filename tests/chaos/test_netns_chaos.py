"""Network partitions between real node processes, each in its own network namespace.

Needs root and iproute2 (``ip netns``, ``ip rule ... blackhole``); skipped with the reason
otherwise. Every namespace and veth is removed at the end, even when the test fails.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.chaos.netns import NetnsNemesis, netns_cluster, netns_unavailable_reason

from .conftest import run_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

_REASON = netns_unavailable_reason()


@pytest.fixture(params=["plain", "tls"])
def netns_nemesis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NetnsNemesis]:
    """A 3-node cluster in namespaces: signed plain HTTP, or mutual TLS between nodes (the
    same faults must give the same verdicts)."""
    if _REASON:
        pytest.skip(_REASON)
    with netns_cluster(tmp_path, 3, tls=request.param == "tls") as nemesis:
        if request.param == "tls":
            assert "mutual TLS" in nemesis.nodes[0].log_text()
        yield nemesis


def test_majority_minority_partition_under_load(netns_nemesis: NetnsNemesis, tmp_path: Path) -> None:
    """{n0,n1} | {n2} for 8 s, then a one-way cut n0 -> n2, all under load; heal and check."""
    nem = netns_nemesis
    n0, n1, n2 = nem.nodes

    def script(stop: threading.Event) -> None:
        if stop.wait(2.0):
            return
        nem.partition([[n0, n1], [n2]])
        if stop.wait(8.0):
            return
        nem.heal_network()
        if stop.wait(2.0):
            return
        nem.partition_one_way([n0], [n2])
        stop.wait(5.0)

    report, _ = run_scenario(nem, tmp_path, 20.0, script)
    assert report.ok, report.summary()
    assert [e.action for e in nem.events if e.action in ("partition", "one_way")] == ["partition", "one_way"]
    assert report.stats["outcomes"].get("put:ok", 0) >= 20, report.stats["outcomes"]


def test_degraded_link_delay_and_loss(netns_nemesis: NetnsNemesis, tmp_path: Path) -> None:
    """200 ms delay and 20% loss on one node's link under load (tc netem; skipped without it)."""
    nem = netns_nemesis
    if not nem.supports("delay"):
        pytest.skip(nem.network.netem_reason or "netem unavailable")

    def script(stop: threading.Event) -> None:
        nem.degrade(nem.nodes[2], delay_ms=200, loss_pct=20)
        stop.wait(15.0)

    report, _ = run_scenario(nem, tmp_path, 15.0, script)
    assert report.ok, report.summary()
