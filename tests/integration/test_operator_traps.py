"""Mistakes an operator makes that must not pass silently: a node started with the wrong cluster
secret, a second node (or a restore) on a data directory a running node holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from p2pstore.launcher import child_env, free_port, http_json
from tests.support.processes import run_cli, start_nodes, wait_for


def test_a_node_with_the_wrong_secret_says_it_is_not_joined_and_why(tmp_path: Path) -> None:
    """Two nodes; the second restarts with another secret. It knows its old peers (its member
    list is on disk) yet every one of them refuses it: /health and /status say "joined": false
    with the reason, file requests through it are 503 saying so, and both sides log it once,
    not once per message."""
    a, b = start_nodes(tmp_path, 2, cluster_secret="right")
    try:
        wait_for(lambda: len(b.get_json("/status")["members"]) == 2, 20, message="b joined")
        b.terminate()
        b.args = [*b.args, "--cluster-secret", "wrong"]  # the last flag wins
        b.start()

        def says_refused() -> bool:
            health = b.health()
            return bool(health and health["joined"] is False and health["join_error"])

        wait_for(says_refused, 30, message="b reports that its peers refuse it")
        health = b.health()
        assert health is not None and "wrong cluster secret" in health["join_error"], health
        status = b.get_json("/status")
        assert status["joined"] is False and "refused by peers" in status["join_error"]
        code, answer = http_json(f"{b.url}/files")
        assert code == 503 and "not part of its cluster" in answer["error"], answer
        wait_for(lambda: "wrong cluster secret" in a.log_text(), 10, message="a logs the refusal")
        assert b.log_text().count("refused us (wrong cluster secret)") == 1
        assert a.log_text().count("wrong cluster secret") == 1
        assert "Traceback" not in a.log_text() + b.log_text()
    finally:
        a.terminate()
        b.terminate()


def test_a_data_directory_in_use_is_refused_by_start_and_restore(tmp_path: Path) -> None:
    [node] = start_nodes(tmp_path, 1)
    try:
        code, _ = http_json(f"{node.url}/checkpoint", method="POST")
        assert code == 200
        db = node.data_dir / "meta.sqlite"
        before = db.stat().st_ino  # a restore replaces the file
        second = subprocess.run(
            [sys.executable, "-m", "p2pstore", "node", "start", "--data-dir", str(node.data_dir),
             "--port", str(free_port())],
            capture_output=True, text=True, env=child_env(), timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode != 0
        assert "in use by another p2pstore process" in second.stderr and "Traceback" not in second.stderr
        restore = run_cli("node", "restore", "--data-dir", str(node.data_dir))
        err = restore.stderr.decode()
        assert restore.returncode != 0 and "restore refused" in err and "Traceback" not in err, err
        assert db.stat().st_ino == before, "the running node's database was replaced"
        assert node.health() is not None
    finally:
        node.terminate()
    restore = run_cli("node", "restore", "--data-dir", str(node.data_dir))  # stopped: allowed
    assert restore.returncode == 0, restore.stderr.decode()
