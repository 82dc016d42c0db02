"""pytest plugin: one Docker engine and one node image per test session.

Enable with ``pytest_plugins = ["tests.support.docker"]`` (tests/deploy/test_docker.py and
tests/chaos/test_docker_chaos.py both do, so the image is built once for both). The engine comes
from scripts/docker-setup: a running one is used, else dockerd is started (as root) in a temporary
data root; the base image is made locally (debootstrap, no registry) and the Python packages come
from a wheelhouse built on the host. When no engine can be had every test using these fixtures is
skipped with the reason; P2PSTORE_SKIP_DOCKER=1 skips them on purpose. Everything started here
(dockerd, its data root, the image) is removed at the end of the session, even after failures.

PYTEST_DONT_REWRITE: the test modules import helpers from here before pytest loads it as a plugin.

Environment knobs: P2PSTORE_TEST_BASE_IMAGE (use this base instead of the debootstrap one, e.g.
python:3.11-slim where a registry is reachable), P2PSTORE_CACHE (rootfs tarball and wheel cache).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "docker-setup"
BASE_IMAGE = "p2pstore-base:test"
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "compose.yaml", "pyproject.toml", "README.md", "LICENSE")
CONTEXT_DIRS = ("p2pstore", "cli")


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


@dataclass
class NodeImage:
    """The node image built once per session from a copy of the sources (``context``)."""

    engine: Engine
    context: Path
    compose: list[str]
    base_image: str
    tag: str

    @property
    def compose_file(self) -> Path:
        return self.context / "compose.yaml"


def compose_command(env: dict[str, str]) -> list[str] | None:
    if shutil.which("docker") and run(["docker", "compose", "version"], env, 30, check=False).returncode == 0:
        return ["docker", "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


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


def make_context(engine: Engine, dest: Path) -> None:
    """A build context with the sources and a wheelhouse, so the build needs no network."""
    dest.mkdir()
    for name in CONTEXT_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    for name in CONTEXT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(["bash", str(SETUP), "wheels", str(dest / "wheelhouse")], engine.env, 600)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """A Docker engine (a running one, or dockerd started for the session), or a skip with the reason."""
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
        reason = f"no Docker engine could be started: {proc.stderr.strip()[-600:]}"
        say(f"skipping: {reason}")
        pytest.skip(reason)
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


@pytest.fixture(scope="session")
def node_image(docker_engine: Engine) -> Iterator[NodeImage]:
    """Base image, wheelhouse and the node image (built once, through compose's build section)."""
    engine = docker_engine
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
    context = engine.state_dir / "context"
    make_context(engine, context)
    engine.timings["wheels + context"] = time.monotonic() - t0

    token = secrets.token_hex(4)
    image = NodeImage(engine, context, compose, base_image, f"p2pstore-test:{token}")
    env = dict(engine.env, P2PSTORE_IMAGE=image.tag, P2PSTORE_BASE_IMAGE=base_image)
    try:
        t0 = time.monotonic()
        # One build through compose (its build section and BASE_IMAGE arg); every cluster shares it.
        run([*compose, "-p", f"p2pdb{token}", "-f", str(image.compose_file), "build", "node1"], env, 900)
        engine.timings["image build"] = time.monotonic() - t0
        say(f"built {image.tag} on {base_image} in {engine.timings['image build']:.1f}s")
        yield image
    finally:
        engine.docker("rmi", "-f", image.tag, timeout=120, check=False)
