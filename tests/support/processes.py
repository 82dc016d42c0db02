"""Run real p2pstore node processes for integration and chaos tests.

Nodes are separate OS processes (``python -m p2pstore node start``) so tests can kill, freeze
and restart them for real. Readiness is always a polled condition with a deadline, never a
fixed sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from p2pstore.chaos.nodes import ChaosNode, free_port, http_json

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")



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


class NodeProcess(ChaosNode):
    """One node as a child process (the chaos harness's node wrapper, plus test conveniences);
    its log goes to ``<data_dir>.log`` beside the data dir."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        data_dir = Path(data_dir)
        super().__init__(data_dir.name, data_dir, host, port or free_port(host), args, env=dict(env or {}))
        self.token = token  # the API token the node was given (for helpers that talk to it)

    def start(self) -> NodeProcess:
        """Launch the process (does not wait; call wait_ready)."""
        if self.running:
            raise RuntimeError(f"node {self.url} is already running")
        super().start()
        return self

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
        super().wait_ready(timeout)
        body = self.health(timeout=5.0)
        if body is None:
            raise RuntimeError(f"node {self.url} stopped answering right after it was ready")
        return body

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON endpoint of this node; raise on a non-2xx status."""
        status, body = http_json(self.url + path, token=self.token, timeout=timeout)
        if status >= 300:
            raise RuntimeError(f"GET {path} on {self.url}: HTTP {status}: {body}")
        return body

    stop = ChaosNode.pause  # brief: stop/pause both freeze; use terminate() to shut down

    def restart(self, timeout: float = 20.0, kill: bool = False) -> NodeProcess:
        """Stop (gracefully, or SIGKILL when ``kill``) and start again: same data dir and port."""
        if kill:
            self.kill()
        else:
            self.terminate()
        self.start()
        self.wait_ready(timeout)
        return self

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM for a graceful stop; SIGKILL if it takes longer than ``timeout``."""
        super().terminate(timeout)
        return self.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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


def metric(node: NodeProcess, prefix: str, label: str = "") -> int:
    """The sum of a node's /metrics samples whose line starts with ``prefix`` and holds ``label``."""
    with urllib.request.urlopen(node.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(prefix) and label in line
    )
