"""Throw-away local node processes for benchmarks.

A small, self-contained copy of what tests/support/processes.py does (tests/ is not part of the
installed package): start ``python -m p2pstore node start`` children, poll /health until they
answer, stop them. Start-up time is recorded because the scale benchmark reports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def flags_to_args(flags: Mapping[str, Any]) -> list[str]:
    """``{"fsync": "never", "replicas": 3}`` -> ``["--fsync", "never", "--replicas", "3"]``."""
    args: list[str] = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def node_env() -> dict[str, str]:
    """The parent's environment without P2PSTORE_* (the flags decide), importable p2pstore."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSTORE_")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class LocalNode:
    """One node child process; its log goes to ``<data_dir>.log`` beside the data dir."""

    def __init__(self, data_dir: Path, port: int, args: Sequence[str] = (), token: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.args = list(args)
        self.token = token
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> LocalNode:
        """Launch the process without waiting (call wait_ready)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "p2pstore", "node", "start", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", "--port", str(self.port), *self.args]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=node_env(),
                cwd=str(self.data_dir.parent), start_new_session=True,  # Ctrl-C must not hit it first
            )  # fmt: skip
        self.ready_seconds = None
        return self

    def healthy(self, timeout: float = 0.5) -> bool:
        """True when GET /health answers 200."""
        req = urllib.request.Request(self.url + "/health")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll /health; return the seconds from process start to the first 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None:
                raise RuntimeError("node was never started")
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.url} exited with code {self.proc.returncode} before it was "
                                   f"ready: {self.last_log_line()}")  # fmt: skip
            if self.healthy():
                self.ready_seconds = time.monotonic() - self.started_at
                return self.ready_seconds
            if time.monotonic() >= deadline:
                raise TimeoutError(f"node {self.url} not ready after {timeout:.0f}s: {self.last_log_line()}")
            time.sleep(0.02)

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        """GET a JSON endpoint of this node (raises on errors)."""
        req = urllib.request.Request(self.url + path)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "empty log"

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM for a graceful stop; SIGKILL when it takes longer than ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def make_nodes(parent: Path, n: int, token: str | None = None, **flags: Any) -> list[LocalNode]:
    """``n`` unstarted nodes under ``parent``: one cluster secret, node 0 the seed of the others."""
    flags.setdefault("cluster_secret", f"bench-secret-{os.getpid()}-{time.monotonic_ns()}")
    if token:
        flags["api_token"] = token
    ports: list[int] = []
    while len(ports) < n:
        if (port := free_port()) not in ports:
            ports.append(port)
    nodes = []
    for i, port in enumerate(ports):
        node_flags = dict(flags)
        if i > 0:
            node_flags["seeds"] = f"127.0.0.1:{ports[0]}"
        nodes.append(LocalNode(Path(parent) / f"node{i}", port, flags_to_args(node_flags), token))
    return nodes


def start_all(nodes: Sequence[LocalNode], timeout: float = 60.0, one_by_one: bool = False) -> None:
    """Start the nodes and wait until all answer /health; kill them all if one fails.

    ``one_by_one`` waits for each before starting the next, so each ``ready_seconds`` is a
    start-up time not shared with the others' start-up.
    """
    try:
        for node in nodes:
            node.start()
            if one_by_one:
                node.wait_ready(timeout)
        for node in nodes:
            if node.ready_seconds is None:
                node.wait_ready(timeout)
    except BaseException:
        for node in nodes:
            node.kill()
        raise


def wait_converged(nodes: Sequence[LocalNode], timeout: float = 60.0) -> None:
    """Poll /status until every node sees all of them alive: a benchmark that starts earlier
    measures writes placed on a partial view, and the repairs that follow them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            views = [node.get_json("/status") for node in nodes]
            if all(sum(m["state"] == "alive" for m in v["members"]) >= len(nodes) for v in views):
                return
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the {len(nodes)} nodes did not all see each other within {timeout:.0f}s")
        time.sleep(0.1)


def start_nodes(
    parent: Path, n: int, timeout: float = 60.0, token: str | None = None, **flags: Any
) -> list[LocalNode]:
    """Start ``n`` nodes under ``parent`` and wait until all are ready and see each other."""
    nodes = make_nodes(parent, n, token, **flags)
    start_all(nodes, timeout)
    try:
        wait_converged(nodes, timeout)
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes
