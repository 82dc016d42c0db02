"""Each kind of failure says what happened, in one line, with its own exit code (docs/cli.md):
2 bad input, 3 unreachable, 4 not found, 5 refused by a node (with the node's reason)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from p2pstore.launcher import free_port
from tests.support.processes import NodeProcess, run_cli


def one_line(res: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = res.stderr.decode()
    assert res.returncode == code, (res.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    return err.strip()


def test_unreachable_is_exit_3(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "f").write_bytes(b"f")
    for args in (["stat", "k"], ["ls"], ["put", str(tmp_path / "f"), "k"], ["status"]):
        line = one_line(run_cli("--url", url, *args), 3)
        assert "cannot reach any node" in line and "connection refused" in line


def test_dns_failure_names_the_cause(tmp_path: Path) -> None:
    url = "http://no-such-host.invalid:7000"
    (tmp_path / "f").write_bytes(b"f")
    for args in (["stat", "k"], ["put", str(tmp_path / "f"), "k"]):
        line = one_line(run_cli("--url", url, *args), 3)
        assert "cannot resolve the host name" in line and "-2" not in line, line


def test_not_found_is_exit_4(node: NodeProcess, tmp_path: Path) -> None:
    assert one_line(run_cli("--url", node.url, "stat", "nope"), 4) == "error: key not found: nope"
    one_line(run_cli("--url", node.url, "get", "nope", str(tmp_path / "x")), 4)
    one_line(run_cli("--url", node.url, "recover", "no-such-node"), 4)


def test_bad_input_is_exit_2(node: NodeProcess, tmp_path: Path) -> None:
    one_line(run_cli("--url", node.url, "put", str(tmp_path / "missing.txt")), 2)
    one_line(run_cli("--url", node.url, "ls", "--limit", "0"), 2)
    (tmp_path / "f").write_bytes(b"f")
    line = one_line(run_cli("--url", node.url, "put", str(tmp_path / "f"), "a/../b"), 2)
    assert "bad input (HTTP 400)" in line and "segments" in line
    line = one_line(run_cli("--url", node.url, "ls", "--bogus"), 2)
    assert "no such option: --bogus" in line and "did you mean" not in line


def test_write_with_two_nodes_down_is_refused_with_the_reason(node_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nodes = node_factory(3, fsync="never")
    (tmp_path / "f").write_bytes(b"payload")
    done = run_cli("--url", nodes[0].url, "put", str(tmp_path / "f"), "all-three")
    assert done.returncode == 0, done.stderr
    replicas = next(line for line in done.stdout.decode().splitlines() if line.startswith("replicas:"))
    ids = {n.health()["node_id"] for n in nodes}
    assert {r.split()[0] for r in replicas.split(":", 1)[1].split(",")} == ids, replicas  # all 3 listed
    nodes[1].kill()
    nodes[2].kill()
    urls = ",".join(n.url for n in nodes)
    line = one_line(run_cli("--url", urls, "put", str(tmp_path / "f"), "k", timeout=120), 5)
    assert "cannot reach" not in line
    assert f"refused by 127.0.0.1:{nodes[0].port}" in line and "replica" in line, line
