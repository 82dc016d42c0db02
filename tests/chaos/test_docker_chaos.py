"""Chaos on compose.yaml's containers: real docker kill / start, pause / unpause, network disconnect.

The engine and the node image come from the session fixtures in tests/support/docker.py (the same
as tests/deploy/test_docker.py, so the image is built once per session); skipped with the reason
when no Docker engine can be started, or on purpose with P2PSTORE_SKIP_DOCKER=1. Every container,
network and volume of the run is removed on exit, even when a test fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2pstore.chaos.docker import DockerCli, DockerNemesis, compose_cluster, project_leftovers
from p2pstore.chaos.nemesis import Schedule
from p2pstore.chaos.workload import WorkloadConfig
from tests.support.docker import NodeImage, say

from .conftest import run_scenario

pytest_plugins = ["tests.support.docker"]
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def docker_nemesis(node_image: NodeImage) -> Iterator[DockerNemesis]:
    """compose.yaml's three nodes on loopback ports; afterwards nothing of the project may remain."""
    engine = node_image.engine
    t0 = time.monotonic()
    with compose_cluster(
        node_image.compose,
        node_image.compose_file,
        engine.env,
        node_image.tag,
        extra_env={"P2PSTORE_GOSSIP_INTERVAL": "0.2"},
    ) as nem:
        project = nem.project
        say(f"{project}: 3 containers answering /health in {time.monotonic() - t0:.1f}s")
        yield nem
        t_down = time.monotonic()
    left = project_leftovers(DockerCli(engine.env), project)
    say(f"{project}: compose down -v in {time.monotonic() - t_down:.1f}s; cluster lived {t_down - t0:.1f}s")
    assert not any(left.values()), f"left behind: {left}"


def test_docker_kill_pause_disconnect_under_load(docker_nemesis: DockerNemesis, tmp_path: Path) -> None:
    """20 s of load while node2 is docker-killed then started, node3 paused (2 of 3 hurt at once),
    then node1 disconnected from the compose network and reconnected; heal, converge, check."""
    nem = docker_nemesis
    nem.heal()  # whatever an earlier test left hurt
    nem.events.clear()
    n1, n2, n3 = nem.nodes
    worst = [0]
    plan: list[tuple[float, Callable[[], None]]] = [
        (1.0, lambda: nem.kill(n2)),  # docker kill
        (3.0, lambda: nem.pause(n3)),  # docker pause: now 2 of 3 hurt
        (6.0, lambda: nem.start(n2)),  # docker start, waits for /health
        (9.0, lambda: nem.resume(n3)),  # docker unpause
        (11.0, lambda: nem.disconnect(n1)),  # docker network disconnect
        (16.0, lambda: nem.connect(n1)),  # docker network connect (service alias restored)
    ]

    def script(stop: threading.Event) -> None:
        for at, action in plan:
            if stop.wait(max(0.0, at - (time.monotonic() - nem.t0))):
                return
            action()
            worst[0] = max(worst[0], len(nem.down()))
            assert len(nem.down()) <= 2, f"more than 2 of 3 nodes hurt: {nem.down()}"

    t0 = time.monotonic()
    report, _ = run_scenario(nem, tmp_path, 20.0, script, WorkloadConfig(seed=13, key_prefix="scripted/"))
    say(f"{nem.project}: scripted load + heal + check took {time.monotonic() - t0:.1f}s")
    actions = [e.action for e in nem.events]
    assert report.ok, report.summary()
    for action in ("kill", "start", "pause", "resume", "disconnect", "connect"):
        assert action in actions, (action, actions)
    kill = next(e for e in nem.events if e.action == "kill")
    assert "running=False" in kill.detail, f"docker kill left the container running: {kill}"
    assert worst[0] == 2, f"the script should hurt 2 of 3 at once, worst was {worst[0]}"
    outcomes = report.stats["outcomes"]
    assert outcomes.get("put:ok", 0) >= 10, outcomes


def test_docker_random_schedule(docker_nemesis: DockerNemesis, tmp_path: Path) -> None:
    """The generic random Schedule on the docker backend: kill, pause, restart and disconnect
    (as a partition), at most 2 of 3 nodes hurt, 15 s; on its own keys so histories do not mix."""
    nem = docker_nemesis
    nem.heal()  # whatever an earlier test left hurt
    nem.events.clear()
    # "partition" twice: it is only drawn while no node is hurt, so give it a fair chance.
    faults = ("kill", "pause", "restart", "partition", "partition")
    schedule = Schedule(faults=faults, max_down=2, interval=(0.5, 1.5), seed=4)
    t0 = time.monotonic()
    report, _ = run_scenario(
        nem,
        tmp_path,
        15.0,
        lambda stop: schedule.run(nem, 15.0, stop),
        WorkloadConfig(seed=17, key_prefix="random/"),
    )
    say(f"{nem.project}: random load + heal + check took {time.monotonic() - t0:.1f}s, {schedule.counts}")
    assert report.ok, report.summary()
    # A docker start waits for /health (~2 s idle, ~10 s on a loaded 2-core box), so few faults fit.
    assert sum(schedule.counts.values()) >= 2, f"too few faults injected: {schedule.counts}"
