"""The real thing: build the image, run compose.yaml's three nodes, kill, restart and pause them.

Needs a Docker engine, from the session fixtures in tests/support/docker.py (shared with
tests/chaos/test_docker_chaos.py, so the image is built once): scripts/docker-setup uses a running
one or starts dockerd (as root) in a temporary data root, and makes a local Debian base image (no
registry is needed: the base comes from debootstrap, the Python packages from a wheelhouse built
on the host). When no engine can be had the test is skipped with the reason;
P2PSTORE_SKIP_DOCKER=1 skips it on purpose.

Environment knobs: P2PSTORE_TEST_BASE_IMAGE (use this base instead of the debootstrap one, e.g.
python:3.11-slim where a registry is reachable), P2PSTORE_CACHE (rootfs tarball and wheel cache).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from p2pstore.launcher import free_port
from tests.support.docker import Engine, NodeImage, http, run, say, wait_for

pytest_plugins = ["tests.support.docker"]
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

NODES = ("node1", "node2", "node3")


class Cluster:
    """compose.yaml's cluster under a unique project name, reached on loopback ports."""

    def __init__(self, image: NodeImage) -> None:
        self.engine: Engine = image.engine
        self.context = image.context
        self.project = f"p2pdt{secrets.token_hex(4)}"
        self.image = image.tag
        self.ports = {name: free_port() for name in NODES}
        self.env = dict(self.engine.env)
        self.env.update(
            P2PSTORE_IMAGE=self.image,
            P2PSTORE_BASE_IMAGE=image.base_image,
            P2PSTORE_CLUSTER_SECRET=secrets.token_urlsafe(16),
            P2PSTORE_BIND_ADDRESS="127.0.0.1",
            **{f"P2PSTORE_PORT_{n.upper()}": str(p) for n, p in self.ports.items()},
        )
        self.compose_cmd = [*image.compose, "-p", self.project, "-f", str(image.compose_file)]
        self.ids: dict[str, str] = {}

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_cmd, *args], self.env, timeout=timeout, check=check)

    def url(self, node: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[node]}{path}"

    def container(self, node: str) -> str:
        if node not in self.ids:
            self.ids[node] = self.compose("ps", "-q", node).stdout.strip()
            assert self.ids[node], f"no container for {node}"
        return self.ids[node]

    def health(self, node: str) -> str:
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        return self.engine.docker("inspect", "-f", fmt, self.container(node)).stdout.strip()

    def alive_members(self, node: str) -> int:
        status, body = http("GET", self.url(node, "/status"), timeout=5)
        if status != 200:
            return 0
        return sum(1 for m in json.loads(body)["members"] if m["state"] == "alive")

    def down(self) -> None:
        """Containers, network and volumes go; the session's image stays for the next cluster."""
        self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180, check=False)


@pytest.fixture(scope="module")
def cluster(node_image: NodeImage) -> Iterator[Cluster]:
    engine = node_image.engine
    c = Cluster(node_image)
    try:
        t0 = time.monotonic()
        c.compose("up", "-d", "--no-build", timeout=300)
        for node in NODES:
            wait_for(f"{node} healthy", lambda n=node: c.health(n) == "healthy", 120)
        for node in NODES:
            wait_for(f"{node} sees 3 alive members", lambda n=node: c.alive_members(n) == 3, 60)
        engine.timings["cluster up + healthy"] = time.monotonic() - t0
        say(f"3 nodes healthy and joined in {engine.timings['cluster up + healthy']:.1f}s")
        yield c
    except BaseException:
        with contextlib.suppress(Exception):
            say(
                "node logs:\n"
                + c.compose("logs", "--no-color", "--tail", "40", timeout=60, check=False).stdout
            )
        raise
    finally:
        t0 = time.monotonic()
        c.down()
        engine.timings["compose down -v"] = time.monotonic() - t0


def test_cluster_survives_kill_pause_and_resyncs(cluster: Cluster) -> None:
    c = cluster
    eng = c.engine
    first = secrets.token_bytes(300_000)
    status, body = http("PUT", c.url("node1", "/files/docker/first.bin"), first, timeout=30)
    assert status in (200, 201), body

    # A node dies hard: every file stays readable through the others.
    t0 = time.monotonic()
    eng.docker("kill", c.container("node2"))
    status, got = http("GET", c.url("node3", "/files/docker/first.bin"), timeout=30)
    assert status == 200 and got == first
    # ...and writable: W=2 of the two live replicas.
    second = secrets.token_bytes(200_000)
    status, body = http("PUT", c.url("node1", "/files/docker/second.bin"), second, timeout=60)
    assert status in (200, 201), body
    eng.timings["kill: read + write"] = time.monotonic() - t0

    # It comes back with the same volume and pulls what it missed, with no manual step.
    eng.docker("start", c.container("node2"))
    took = wait_for(
        "node2 to re-sync second.bin",
        lambda: http("GET", c.url("node2", "/files/docker/second.bin?local=1"), timeout=5) == (200, second),
        120,
    )
    eng.timings["restart -> re-synced"] = took
    say(f"node2 re-synced the file it missed {took:.1f}s after docker start")
    status, got = http("GET", c.url("node2", "/files/docker/first.bin?local=1"), timeout=10)
    assert status == 200 and got == first, "the volume kept node2's own replica"

    # A frozen node (no crash, no reset: packets just go nowhere) must not block reads elsewhere.
    t0 = time.monotonic()
    eng.docker("pause", c.container("node3"))
    try:
        status, got = http("GET", c.url("node1", "/files/docker/second.bin"), timeout=30)
        assert status == 200 and got == second
    finally:
        eng.docker("unpause", c.container("node3"))
    wait_for("node3 healthy after unpause", lambda: c.health("node3") == "healthy", 60)
    wait_for("3 alive members after unpause", lambda: c.alive_members("node1") == 3, 60)
    status, got = http("GET", c.url("node3", "/files/docker/second.bin"), timeout=30)
    assert status == 200 and got == second
    eng.timings["pause/unpause"] = time.monotonic() - t0
