"""Run real p2pstore node processes for integration and chaos tests.

Nodes are separate OS processes (``python -m p2pstore node start``, through p2pstore/launcher.py)
so tests can kill, freeze and restart them for real. Readiness is always a polled condition with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from p2pstore.launcher import LocalNode, child_env, free_ports, start_all

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


class NodeProcess(LocalNode):
    """One node as a child process: the launcher's node, strict about double starts."""

    def start(self) -> NodeProcess:
        """Launch the process (does not wait; call wait_ready); a second start is a test bug."""
        if self.running:
            raise RuntimeError(f"node {self.url} is already running")
        return super().start()

    stop = LocalNode.pause  # brief: stop/pause both freeze; use terminate() to shut down


def start_nodes(
    tmp_path: Path,
    n: int,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    prefix: str = "node",
    s3: bool = False,
    tls: Path | None = None,
    converged: bool = True,
    **flags: Any,
) -> list[NodeProcess]:
    """Start ``n`` nodes under ``tmp_path`` and wait until all are ready.

    Node 0 is the seed: the others get ``--seeds 127.0.0.1:<port0>`` (unless ``seeds=`` is
    given). All share one ``--cluster-secret`` (override with ``cluster_secret=...``). Extra
    keyword flags are passed to every node (``fsync="never"`` -> ``--fsync never``). If any node
    fails to start, the ones already started are killed before the error propagates. ``s3``: each
    node also serves the S3 API, on a free port of its own (``node.s3_url``). ``tls``: a folder
    from ``p2pstore cluster certs`` (node0..n-1): node-to-node traffic is mutual TLS; without it
    the nodes run plain HTTP with signed requests (``--insecure-plain``). ``converged``: also wait
    until every node sees all of them alive, so a file written next is placed on the whole
    cluster and any node can find it (pass False for nodes meant not to meet).
    """
    ports = free_ports(2 * n if s3 else n)
    nodes = NodeProcess.cluster(tmp_path, n, flags, name=prefix, env=env, ports=ports[:n],
                                s3_ports=ports[n:] if s3 else None, tls=tls)  # fmt: skip
    start_all(nodes, timeout, converged=converged and n > 1)
    return nodes


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
        env=child_env(env),
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
