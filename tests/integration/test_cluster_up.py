"""`p2pstore cluster up` through the real command: nodes up and joined, all stopped on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from p2pstore_cli.cluster import port_layout
from p2pstore_cli.cluster_state import alive

from p2pstore.launcher import child_env, free_port, http_json, port_free
from tests.support.processes import wait_for


def free_base_port(n: int, **layout: bool) -> int:
    """A base port whose whole `cluster up` layout for ``n`` nodes (HTTP, S3 and node-to-node
    ports) was free a moment ago."""
    for _ in range(100):
        base = free_port()
        if all(port_free(port) for port, _ in port_layout(base, n, **layout)):
            return base
    pytest.skip(f"no free port layout for {n} nodes")


def joined(port: int) -> bool:
    status, body = http_json(f"http://127.0.0.1:{port}/health", timeout=1.0)
    return status == 200 and body["joined"] is True


def all_joined(proc: subprocess.Popen[str], ports: list[int]) -> bool:
    """Every node answers joined; a `cluster up` that has already ended fails at once, with its output."""
    if proc.poll() is not None:
        out, err = proc.communicate()
        pytest.fail(f"cluster up exited with code {proc.returncode}:\n{out}\n{err}")
    return all(joined(port) for port in ports)


def test_cluster_up_runs_the_nodes_until_sigterm(tmp_path: Path) -> None:
    base = free_base_port(2)
    root = tmp_path / "cluster"
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pstore", "cluster", "up", "-n", "2", "--base-port", str(base),
         "--data-root", str(root), "--fsync", "never"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: all_joined(proc, [base, base + 1]), 60, message="both nodes up and joined")
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


def test_cluster_status_restart_and_stop_from_another_shell(tmp_path: Path) -> None:
    """The state file lets other commands find the cluster: a killed node is reported with the
    command that brings it back, `cluster restart` does (secret and all), `cluster stop` ends it."""
    from tests.support.processes import run_cli

    base = free_base_port(2, s3=False, internal=False)
    root = tmp_path / "cluster"
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pstore", "cluster", "up", "-n", "2", "--base-port", str(base),
         "--data-root", str(root), "--fsync", "never", "--no-s3", "--insecure-plain"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: all_joined(proc, [base, base + 1]), 60, message="both nodes up and joined")
        state_file = root / "cluster.json"
        assert state_file.stat().st_mode & 0o777 == 0o600
        state = json.loads(state_file.read_text())
        assert [n["port"] for n in state["nodes"]] == [base, base + 1] and state["cluster_secret"]
        status = run_cli("cluster", "status", "--data-root", str(root))
        assert status.returncode == 0, status.stderr
        assert status.stdout.decode().count("joined") == 2

        os.kill(state["nodes"][1]["pid"], signal.SIGKILL)
        wait_for(lambda: run_cli("cluster", "status", "--data-root", str(root)).returncode == 1, 30,
                 message="status reports the killed node")  # fmt: skip
        down = run_cli("cluster", "status", "--data-root", str(root), "--json")
        rows = json.loads(down.stdout)["nodes"]
        assert [r["running"] for r in rows] == [True, False]

        again = run_cli("cluster", "restart", "node1", "--data-root", str(root))
        assert again.returncode == 0, again.stderr
        assert "node1 restarted" in again.stdout.decode()
        assert joined(base + 1)  # it found the cluster again: same secret, same seed
        new_pid = json.loads(state_file.read_text())["nodes"][1]["pid"]
        assert new_pid != state["nodes"][1]["pid"]

        bad = run_cli("cluster", "restart", "node7", "--data-root", str(root))
        assert bad.returncode == 2 and b"no node 'node7'" in bad.stderr

        stopped = run_cli("cluster", "stop", "--data-root", str(root))
        assert stopped.returncode == 0, stopped.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"node1 (http://127.0.0.1:{base + 1}) exited with code -9; restart it with: " \
           f"p2pstore cluster restart node1 --data-root {root}" in err
    assert "cluster restart NODE" in out
    for port in (base, base + 1):
        with pytest.raises(OSError):
            http_json(f"http://127.0.0.1:{port}/health", timeout=1.0)
    wait_for(lambda: not alive(new_pid, state["nodes"][1]["data_dir"]), 10, message="the restarted node gone")


def test_default_data_root_is_outside_the_current_folder(tmp_path: Path) -> None:
    from tests.support.processes import run_cli

    res = run_cli("cluster", "status", env={"XDG_STATE_HOME": str(tmp_path / "state")}, cwd=tmp_path)
    assert res.returncode == 4
    assert res.stderr.decode() == f"error: no cluster in {tmp_path}/state/p2pstore/cluster " \
                                  "(start one: p2pstore cluster up)\n"
    assert list(tmp_path.iterdir()) == []


def test_cluster_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    """A port of the layout already in use (here node1's node-to-node port) is one clear line and
    exit code 5, before any node starts or any state is written."""
    from tests.support.processes import run_cli

    base = free_base_port(2)
    root = tmp_path / "cluster"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 201))
        taken.listen()
        res = run_cli("cluster", "up", "-n", "2", "--base-port", str(base), "--data-root", str(root))
    assert res.returncode == 5, res.stderr
    assert res.stderr.decode() == f"error: port {base + 201} (node1's node-to-node port) is in use on " \
                                  "127.0.0.1: choose another --base-port\n"
    assert not (root / "cluster.json").exists() and not list(root.glob("node*"))
    bad = run_cli("cluster", "up", "--base-port", "65530", "--data-root", str(root))
    assert bad.returncode == 2 and b"port 65630 (node0's S3 API) is out of range" in bad.stderr
