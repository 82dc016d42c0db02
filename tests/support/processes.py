"""Run real p2pstore node processes for integration and chaos tests.

Nodes are separate OS processes (``python -m p2pstore node start``) so tests can kill, freeze
and restart them for real. Readiness is always a polled condition with a deadline, never a
fixed sleep.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

_live: weakref.WeakSet[NodeProcess] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it, so parallel tests don't collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Exceptions from the predicate count as "not yet" (the last one is chained on timeout), so
    a predicate can simply make an HTTP call to a node that is still starting.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}") from last_exc
        time.sleep(interval)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without P2PSTORE_* (tests must be hermetic), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSTORE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def flags_to_args(flags: Mapping[str, Any]) -> list[str]:
    """``{"chunk_size": 4096, "fsync": "never"}`` -> ``["--chunk-size", "4096", ...]``.

    True adds a bare flag, None/False drop it, lists become comma-separated values.
    """
    args: list[str] = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, list | tuple):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


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


class NodeProcess:
    """One node as a child process; its log goes to ``<data_dir>.log`` beside the data dir."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.env = dict(env or {})
        # The API token the node was given (for helpers that talk to it).
        self.token = token
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "p2pstore", "node", "start",
            "--data-dir", str(self.data_dir), "--host", self.host, "--port", str(self.port),
            *self.args,
        ]  # fmt: skip

    def start(self) -> NodeProcess:
        """Launch the process (does not wait; call wait_ready)."""
        if self.running:
            raise RuntimeError(f"node {self.url} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(self.env),
                cwd=str(self.data_dir.parent),
                start_new_session=True,  # a Ctrl-C on pytest must not hit the node first
            )
        self._paused = False
        _live.add(self)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """GET /health, or None when the node does not answer 200."""
        try:
            status, body = http_json(self.url + "/health", token=self.token, timeout=timeout)
        except (OSError, urllib.error.URLError):
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        """Poll /health until it answers; raise with the log tail if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None:
                raise RuntimeError("node was never started")
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"node {self.url} exited with code {self.proc.returncode} before it was "
                    f"ready; log tail:\n{self.log_tail()}"
                )
            body = self.health(timeout=0.5)
            if body is not None:
                return body
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"node {self.url} not ready after {timeout:.0f}s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON endpoint of this node; raise on a non-2xx status."""
        status, body = http_json(self.url + path, token=self.token, timeout=timeout)
        if status >= 300:
            raise RuntimeError(f"GET {path} on {self.url}: HTTP {status}: {body}")
        return body

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the crash case (no cleanup, no flush); waits until it is gone."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait()
        self._paused = False

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM for a graceful stop; SIGKILL if it takes longer than ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            if self._paused:
                self._signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._paused = False
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP: the node freezes (a hung or partitioned peer) but keeps its sockets."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    stop = pause  # brief: stop/pause both freeze; use terminate() to shut down

    def resume(self) -> None:
        """SIGCONT: undo pause()."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self, timeout: float = 20.0, kill: bool = False) -> NodeProcess:
        """Stop (gracefully, or SIGKILL when ``kill``) and start again: same data dir and port."""
        if kill:
            self.kill()
        else:
            self.terminate()
        # The old socket may linger briefly; the new process binds with SO_REUSEADDR (aiohttp),
        # so starting right away is fine.
        self.start()
        self.wait_ready(timeout)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited({self.returncode})"
        return f"<NodeProcess {self.url} {state} {self.data_dir}>"


def start_nodes(
    tmp_path: Path,
    n: int,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    prefix: str = "node",
    **flags: Any,
) -> list[NodeProcess]:
    """Start ``n`` nodes under ``tmp_path`` and wait until all are ready.

    Node 0 is the seed: the others get ``--seeds 127.0.0.1:<port0>``. All share one
    ``--cluster-secret`` (override with ``cluster_secret=...``). Extra keyword flags are
    passed to every node (``fsync="never"`` -> ``--fsync never``). If any node fails to
    start, the ones already started are killed before the error propagates.
    """
    flags = dict(flags)
    flags.setdefault("cluster_secret", f"test-secret-{os.getpid()}-{time.monotonic_ns()}")
    token = flags.get("api_token")
    ports = _distinct_ports(n)
    nodes = []
    for i, port in enumerate(ports):
        node_flags = dict(flags)
        if i > 0 and "seeds" not in flags:
            node_flags["seeds"] = f"127.0.0.1:{ports[0]}"
        nodes.append(
            NodeProcess(
                Path(tmp_path) / f"{prefix}{i}",
                port=port,
                args=flags_to_args(node_flags),
                env=env,
                token=token,
            )
        )
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(timeout)
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes


def _distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def run_cli(
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``p2pstore`` command (``python -m p2pstore``); output captured as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "p2pstore", *args],
        input=input,
        capture_output=True,
        env=clean_env(env),
        timeout=timeout,
        cwd=str(cwd) if cwd else None,
        check=False,
    )


@atexit.register
def _reap() -> None:
    """Never leave orphaned nodes behind, even when the test run is aborted."""
    for node in list(_live):
        with contextlib.suppress(Exception):
            node.kill()
