"""The real thing: build the image, run compose.yaml's three nodes, kill, restart and pause them.

Needs a Docker engine. scripts/docker-setup uses a running one or starts dockerd (as root) in a
temporary data root, and makes a local Debian base image (no registry is needed: the base comes
from debootstrap, the Python packages from a wheelhouse built on the host). When no engine can be
had the test is skipped with the reason; P2PSTORE_SKIP_DOCKER=1 skips it on purpose.

Environment knobs: P2PSTORE_TEST_BASE_IMAGE (use this base instead of the debootstrap one, e.g.
python:3.11-slim where a registry is reachable), P2PSTORE_CACHE (rootfs tarball and wheel cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "docker-setup"
BASE_IMAGE = "p2pstore-base:test"
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "compose.yaml", "pyproject.toml", "README.md", "LICENSE")
CONTEXT_DIRS = ("p2pstore", "cli")
NODES = ("node1", "node2", "node3")


def say(message: str) -> None:
    """Progress and timings, shown with `pytest -s` and in the captured output of a failure."""
    print(f"[docker-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    args: list[str], env: dict[str, str], timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Engine:
    env: dict[str, str]
    state_dir: Path
    started: bool
    timings: dict[str, float] = field(default_factory=dict)

    def docker(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], self.env, timeout=timeout, check=check)


def compose_command(env: dict[str, str]) -> list[str] | None:
    if shutil.which("docker") and run(["docker", "compose", "version"], env, 30, check=False).returncode == 0:
        return ["docker", "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    if os.environ.get("P2PSTORE_SKIP_DOCKER") == "1":
        pytest.skip("P2PSTORE_SKIP_DOCKER=1")
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI (scripts/docker-setup install needs root and apt)")
    # A short path: dockerd's unix sockets must stay under 108 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="p2pdk-", dir="/tmp"))
    env = dict(os.environ)
    t0 = time.monotonic()
    proc = run(["bash", str(SETUP), "engine-start", str(state_dir / "engine")], env, 180, check=False)
    if proc.returncode != 0:
        shutil.rmtree(state_dir, ignore_errors=True)
        pytest.skip(f"no Docker engine could be started: {proc.stderr.strip()[-600:]}")
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "DOCKER_HOST":
            env["DOCKER_HOST"] = value
    started = "DOCKERD_STARTED=1" in proc.stdout
    eng = Engine(env=env, state_dir=state_dir, started=started)
    eng.timings["engine start"] = time.monotonic() - t0
    say(f"engine at {env.get('DOCKER_HOST')} ({'started by the test' if started else 'already running'})")
    try:
        yield eng
    finally:
        if started:
            t1 = time.monotonic()
            run(["bash", str(SETUP), "engine-stop", str(state_dir / "engine")], env, 180, check=False)
            say(f"dockerd stopped and its data root deleted in {time.monotonic() - t1:.1f}s")
        shutil.rmtree(state_dir, ignore_errors=True)
        say("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in eng.timings.items()))


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(what: str, predicate: object, timeout: float, interval: float = 0.5) -> float:
    """Poll ``predicate()`` until true; return the seconds it took. Errors count as 'not yet'."""
    assert callable(predicate)
    t0 = time.monotonic()
    last: object = None
    while time.monotonic() - t0 < timeout:
        try:
            if predicate():
                return time.monotonic() - t0
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


class Cluster:
    """compose.yaml's cluster under a unique project name, reached on loopback ports."""

    def __init__(self, engine: Engine, context: Path, compose: list[str], base_image: str) -> None:
        self.engine = engine
        self.context = context
        self.project = f"p2pdt{secrets.token_hex(4)}"
        self.image = f"p2pstore-test:{self.project}"
        self.ports = {name: free_port() for name in NODES}
        self.env = dict(engine.env)
        self.env.update(
            P2PSTORE_IMAGE=self.image,
            P2PSTORE_BASE_IMAGE=base_image,
            P2PSTORE_CLUSTER_SECRET=secrets.token_urlsafe(16),
            P2PSTORE_BIND_ADDRESS="127.0.0.1",
            **{f"P2PSTORE_PORT_{n.upper()}": str(p) for n, p in self.ports.items()},
        )
        self.compose_cmd = [*compose, "-p", self.project, "-f", str(context / "compose.yaml")]
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
        self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180, check=False)
        self.engine.docker("rmi", "-f", self.image, timeout=120, check=False)


def make_context(engine: Engine, dest: Path) -> None:
    """A build context with the sources and a wheelhouse, so the build needs no network."""
    dest.mkdir()
    for name in CONTEXT_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    for name in CONTEXT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(["bash", str(SETUP), "wheels", str(dest / "wheelhouse")], engine.env, 600)


@pytest.fixture(scope="module")
def cluster(engine: Engine) -> Iterator[Cluster]:
    compose = compose_command(engine.env)
    if compose is None:
        pytest.skip("no compose CLI (docker compose or docker-compose)")
    base_image = os.environ.get("P2PSTORE_TEST_BASE_IMAGE", "")
    t0 = time.monotonic()
    if not base_image:
        proc = run(["bash", str(SETUP), "base-image", BASE_IMAGE], engine.env, 900, check=False)
        if proc.returncode != 0:
            pytest.skip(f"no local base image could be made: {proc.stderr.strip()[-600:]}")
        base_image = BASE_IMAGE
    engine.timings["base image"] = time.monotonic() - t0

    t0 = time.monotonic()
    make_context(engine, engine.state_dir / "context")
    engine.timings["wheels + context"] = time.monotonic() - t0

    c = Cluster(engine, engine.state_dir / "context", compose, base_image)
    try:
        t0 = time.monotonic()
        # One build through compose (its build section and BASE_IMAGE arg); the nodes share the image.
        c.compose("build", "node1", timeout=900)
        engine.timings["image build"] = time.monotonic() - t0
        say(f"built {c.image} on {base_image} in {engine.timings['image build']:.1f}s")

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
