"""Node processes for chaos runs: real ``python -m p2pstore node start`` children we can hurt.

Self-contained (the CLI's ``p2pstore chaos`` needs it outside the test tree). A node may run
behind a command prefix such as ``ip netns exec NS`` (which execs, so the pid stays the node's).
"""

from __future__ import annotations

import atexit
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
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_live: weakref.WeakSet[ChaosNode] = weakref.WeakSet()
_SRC_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_json(
    url: str,
    method: str = "GET",
    body: Any = None,
    token: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """A small blocking JSON request: returns (status, decoded body or None); never raises on 4xx/5xx."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """Blocking GET returning (status, decoded JSON); raises OSError when unreachable."""
    return http_json(url, timeout=timeout)


class ChaosNode:
    """One node process; ``url`` is where clients reach it, ``listen`` where it binds."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        host: str,
        port: int,
        args: Sequence[str] = (),
        prefix: Sequence[str] = (),
        listen: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.env = dict(env or {})  # extra environment for the node process
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.args = list(args)
        self.prefix = list(prefix)
        self.listen = listen or host
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.node_id: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        advertise = [] if self.listen == self.host else ["--advertise", self.address]
        return [
            *self.prefix, sys.executable, "-m", "p2pstore", "node", "start",
            "--data-dir", str(self.data_dir), "--host", self.listen, "--port", str(self.port),
            *advertise, *self.args,
        ]  # fmt: skip

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ChaosNode:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSTORE_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SRC_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=str(self.data_dir.parent), start_new_session=True,
            )  # fmt: skip
        self.paused = False
        _live.add(self)
        return self

    def healthy(self) -> bool:
        """One /health poll: the node answers and has joined its cluster (a node started with
        seeds refuses file requests until then); remembers the node id it reports."""
        with contextlib.suppress(OSError, ValueError):
            status, body = get_json(self.url + "/health", timeout=1.0)
            if status == 200 and isinstance(body, dict):
                self.node_id = body.get("node_id")
                return body.get("joined", True) is not False
        return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited before it was ready:\n{self.log_tail()}")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap: a crash or power cut for this process."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait()
        self.paused = False

    def terminate(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.running:
            self._signal(signal.SIGTERM)
            if self.paused:
                self._signal(signal.SIGCONT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.paused = False

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<ChaosNode {self.name} {self.url} {'running' if self.running else 'down'}>"


def reap_all() -> None:
    """Kill every chaos node this process started (atexit, and on a failed start)."""
    for node in list(_live):
        with contextlib.suppress(Exception):
            node.kill()


atexit.register(reap_all)
