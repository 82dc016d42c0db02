"""`p2pstore cluster up` through the real command: nodes up and joined, all stopped on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from p2pstore.launcher import child_env, free_port, http_json
from tests.support.processes import wait_for


def consecutive_free_ports(n: int) -> int:
    """The first of ``n`` consecutive ports that were all free a moment ago."""
    for _ in range(100):
        base = free_port()
        sockets: list[socket.socket] = []
        try:
            for i in range(n):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    pytest.skip(f"no {n} consecutive free ports")


def joined(port: int) -> bool:
    status, body = http_json(f"http://127.0.0.1:{port}/health", timeout=1.0)
    return status == 200 and body["joined"] is True


def test_cluster_up_runs_the_nodes_until_sigterm(tmp_path: Path) -> None:
    base = consecutive_free_ports(2)
    root = tmp_path / "cluster"
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pstore", "cluster", "up", "-n", "2", "--base-port", str(base),
         "--data-root", str(root), "--fsync", "never"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: joined(base) and joined(base + 1), 60, message="both nodes up and joined")
        key = (root / "certs" / "ca-key.pem").read_text()  # node-to-node mutual TLS by default
        for i in range(2):
            log = (root / f"node{i}.log").read_text()
            assert f"--port {base + i}" in log and f"--internal-port {base + 200 + i}" in log
            assert "--cluster-ca" in log and "--insecure-plain" not in log and key not in log
            assert "--s3-domain localhost" in log  # http://<bucket>.localhost:PORT/ is virtual-host style
        assert f"--seeds 127.0.0.1:{base + 200}" in (root / "node1.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "p2pstore cluster of 2 nodes is up" in out
    assert out.strip().endswith("all nodes stopped")
    for port in (base, base + 1):
        with pytest.raises(OSError):
            http_json(f"http://127.0.0.1:{port}/health", timeout=1.0)
